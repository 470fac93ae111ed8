// The service map: services, databases, queues and external targets laid out left to right by
// call depth; node size is the rate, colour the error rate; edges carry rate, errors and p99.
import { html, useContext, useMemo, useRef, useState } from '../vendor/preact-htm.js';
import { AppContext } from '../context.js';
import { useApi, apiUrl } from '../api.js';
import { Link, href, setParams } from '../route.js';
import { Loaded, Empty } from '../states.js';
import { formatRate, formatPct, formatMs, errorColor, rangeParams, rangePhrase } from '../format.js';
import { RedCharts } from './dashboard.js';
import { callSummary, errorStyle, RateNote } from '../measures.js';

const COLUMN = 270;
const ROW = 120;
const MARGIN_X = 110;
const MARGIN_Y = 70;
const KIND_LABEL = { service: 'service', database: 'database', messaging: 'queue', external: 'external' };

export function MapView() {
  const { route, range } = useContext(AppContext);
  const topology = useApi(apiUrl('topology', rangeParams(range)));
  const selectedNode = route.params.get('node');
  const selectedEdge = route.params.get('edge');
  return html`<div class="map-layout">
    <section class="map-panel">
      <div class="view-head"><h1>Service map</h1><span class="muted">${range.label}</span><${RateNote} seconds=${topology.data?.rate_seconds} range=${range} /></div>
      <${Loaded} result=${topology} what="the service map" ready="map">
        ${(t) => t.nodes.length === 0
          ? html`<${Empty}>No calls ${rangePhrase(range)}. Point an OpenTelemetry SDK at port 4317 (gRPC) or 4318 (HTTP), or start <code>sightline serve --demo</code>.<//>`
          : html`<${Graph} topology=${t} selectedNode=${selectedNode} selectedEdge=${selectedEdge} />`}
      <//>
    </section>
    ${topology.data && (selectedNode || selectedEdge) ? html`<aside class="side-panel">
      ${selectedNode ? html`<${NodePanel} id=${selectedNode} topology=${topology.data} />` : html`<${EdgePanel} edge=${selectedEdge} topology=${topology.data} />`}
    </aside>` : null}
  </div>`;
}

/** Columns by longest call depth from the entry points; within a column, by the callers' places. */
export function layout(nodes, edges) {
  const ids = nodes.map((n) => n.id);
  const callers = new Map(ids.map((id) => [id, []]));
  for (const e of edges) {
    if (e.source !== e.target && callers.has(e.source) && callers.has(e.target)) callers.get(e.target).push(e.source);
  }
  const depth = new Map();
  const onPath = new Set();
  const depthOf = (id) => {
    if (depth.has(id)) return depth.get(id);
    if (onPath.has(id)) return 0; // a cycle: cut it here
    onPath.add(id);
    let d = 0;
    for (const caller of callers.get(id)) d = Math.max(d, depthOf(caller) + 1);
    onPath.delete(id);
    depth.set(id, d);
    return d;
  };
  ids.forEach(depthOf);
  const columns = [];
  for (const id of [...ids].sort()) {
    const d = depth.get(id);
    (columns[d] ??= []).push(id);
  }
  const row = new Map();
  columns.forEach((column) => {
    const weight = (id) => {
      const places = callers.get(id).filter((c) => row.has(c)).map((c) => row.get(c));
      return places.length ? places.reduce((a, b) => a + b, 0) / places.length : Infinity;
    };
    column.sort((a, b) => weight(a) - weight(b) || a.localeCompare(b));
    column.forEach((id, i) => row.set(id, i - (column.length - 1) / 2));
  });
  const tallest = Math.max(...columns.map((c) => c?.length ?? 0));
  const positions = new Map();
  for (const id of ids) {
    positions.set(id, { x: MARGIN_X + depth.get(id) * COLUMN, y: MARGIN_Y + ((tallest - 1) / 2 + row.get(id)) * ROW });
  }
  return { positions, width: MARGIN_X * 2 + (columns.length - 1) * COLUMN, height: MARGIN_Y * 2 + (tallest - 1) * ROW };
}

function radius(rate) {
  return Math.max(16, Math.min(42, 16 + 6 * Math.log10(1 + rate * 100)));
}

/** Where an edge runs: a cubic Bézier out of the caller's right side into the callee's left
 * (or below both, for a call back to an earlier column). */
function edgeCurve(from, to, ra, rb) {
  const backwards = to.x <= from.x;
  const p0 = backwards ? [from.x, from.y + ra] : [from.x + ra, from.y];
  const p3 = backwards ? [to.x, to.y + rb + 3] : [to.x - rb - 3, to.y];
  const bend = backwards ? 90 : Math.max(40, (p3[0] - p0[0]) / 2);
  const p1 = backwards ? [p0[0], p0[1] + bend] : [p0[0] + bend, p0[1]];
  const p2 = backwards ? [p3[0], p3[1] + bend] : [p3[0] - bend, p3[1]];
  const at = (t) => {
    const u = 1 - t;
    const c = [u * u * u, 3 * u * u * t, 3 * u * t * t, t * t * t];
    return [0, 1].map((k) => c[0] * p0[k] + c[1] * p1[k] + c[2] * p2[k] + c[3] * p3[k]);
  };
  return { d: `M ${p0} C ${p1}, ${p2}, ${p3}`, at };
}

const CHAR_PX = 6;
const LABEL_PX = 14;

function box(cx, cy, width, height) {
  return { x0: cx - width / 2, x1: cx + width / 2, y0: cy - height / 2, y1: cy + height / 2 };
}

function overlaps(a, b) {
  return a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1;
}

/**
 * Places each edge's label on its curve where it covers no node and no other label: tries points
 * along the curve, then small shifts off it; falls back to the middle.
 */
function placeLabels(items, nodeBoxes) {
  const taken = [...nodeBoxes];
  return items.map(({ curve, text }) => {
    const width = text.length * CHAR_PX + 6;
    let chosen = null;
    for (const t of [0.5, 0.4, 0.6, 0.3, 0.7, 0.22, 0.78]) {
      for (const dy of [-7, 9, -21, 23]) {
        const [x, y] = curve.at(t);
        const candidate = box(x, y + dy, width, LABEL_PX);
        if (!taken.some((b) => overlaps(b, candidate))) {
          chosen = { x, y: y + dy, box: candidate };
          break;
        }
      }
      if (chosen) break;
    }
    if (!chosen) {
      const [x, y] = curve.at(0.5);
      chosen = { x, y: y - 7, box: box(x, y - 7, width, LABEL_PX) };
    }
    taken.push(chosen.box);
    return chosen;
  });
}

/** Narrowest view, in map units: about two columns of nodes. */
const MIN_VIEW_WIDTH = 400;
/** How far a press may move and still count as a click rather than a drag, in pixels. */
const CLICK_SLOP_PX = 4;

/**
 * Wheel zoom around the pointer, drag to pan, and buttons: the view is a viewBox, so a map of
 * hundreds of services can be read one neighbourhood at a time. `null` means the whole map.
 */
function usePanZoom(whole) {
  const [view, setView] = useState(null);
  const svg = useRef(null);
  const press = useRef(null);
  const dragged = useRef(false);
  const current = view ?? whole;
  const zoom = (factor, centre) => setView((v) => {
    const from = v ?? whole;
    const w = Math.min(whole.w, Math.max(MIN_VIEW_WIDTH, from.w * factor));
    if (w >= whole.w) return null;
    const k = w / from.w;
    const c = centre ?? { x: from.x + from.w / 2, y: from.y + from.h / 2 };
    return { x: c.x - (c.x - from.x) * k, y: c.y - (c.y - from.y) * k, w, h: from.h * k };
  });
  const toMap = (event) => new DOMPoint(event.clientX, event.clientY).matrixTransform(svg.current.getScreenCTM().inverse());
  const handlers = {
    ref: svg,
    onWheel: (event) => {
      event.preventDefault();
      zoom(Math.exp(event.deltaY * 0.0015), toMap(event));
    },
    onPointerDown: (event) => {
      if (event.button !== 0) return;
      dragged.current = false;
      press.current = { x: event.clientX, y: event.clientY, view: current, unitsPerPx: 1 / svg.current.getScreenCTM().a, id: event.pointerId };
    },
    onPointerMove: (event) => {
      const p = press.current;
      if (!p) return;
      const dx = event.clientX - p.x;
      const dy = event.clientY - p.y;
      if (!dragged.current) {
        if (Math.hypot(dx, dy) < CLICK_SLOP_PX) return;
        // Captured only once it is a drag: a capture from the press would send the click to the
        // map instead of the node under the pointer.
        dragged.current = true;
        svg.current.setPointerCapture(p.id);
      }
      setView({ ...p.view, x: p.view.x - dx * p.unitsPerPx, y: p.view.y - dy * p.unitsPerPx });
    },
    onPointerUp: () => { press.current = null; },
    onPointerCancel: () => { press.current = null; },
    // The click that ends a drag selects nothing.
    onClickCapture: (event) => {
      if (!dragged.current) return;
      dragged.current = false;
      event.stopPropagation();
    },
  };
  const controls = html`<div class="map-tools" role="group" aria-label="Zoom">
    <span class="muted small">scroll to zoom · drag to move</span>
    <button type="button" aria-label="Zoom in" onClick=${() => zoom(1 / 1.5)}>+</button>
    <button type="button" aria-label="Zoom out" onClick=${() => zoom(1.5)}>−</button>
    <button type="button" aria-label="Fit the map" disabled=${view === null} onClick=${() => setView(null)}>Fit</button>
  </div>`;
  return { viewBox: `${current.x} ${current.y} ${current.w} ${current.h}`, handlers, controls, zoomed: view !== null };
}

function Graph({ topology, selectedNode, selectedEdge }) {
  const drawing = useMemo(() => {
    const { positions, width, height } = layout(topology.nodes, topology.edges);
    const byId = new Map(topology.nodes.map((n) => [n.id, n]));
    const nodeBoxes = topology.nodes.flatMap((n) => {
      const at = positions.get(n.id);
      const r = radius(n.rate);
      const labelWidth = Math.max(n.id.length * 8, callSummary(n).length * CHAR_PX);
      return [box(at.x, at.y, 2 * r + 4, 2 * r + 4), box(at.x, at.y + r + 20, labelWidth, 34)];
    });
    const edges = topology.edges.filter((e) => positions.has(e.source) && positions.has(e.target)).map((edge) => ({
      edge,
      text: callSummary(edge),
      curve: edgeCurve(positions.get(edge.source), positions.get(edge.target), radius(byId.get(edge.source).rate), radius(byId.get(edge.target).rate)),
    }));
    const labels = placeLabels(edges, nodeBoxes);
    return { positions, width, height, edges: edges.map((e, k) => ({ ...e, label: labels[k] })) };
  }, [topology]);
  const select = (changes) => setParams({ node: null, edge: null, ...changes });
  const { positions, width, height, edges } = drawing;
  const whole = useMemo(() => ({ x: 0, y: 0, w: width, h: height + 40 }), [width, height]);
  const panZoom = usePanZoom(whole);
  return html`${panZoom.controls}<svg class=${`service-map${panZoom.zoomed ? ' zoomed' : ''}`} viewBox=${panZoom.viewBox} style=${`max-height:${Math.max(420, height + 40)}px`}
      role="img" aria-label="Service map" ...${panZoom.handlers} onClick=${(e) => e.target === e.currentTarget && select({})}>
    <defs>
      <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" markerHeight="9" markerUnits="userSpaceOnUse" orient="auto-start-reverse">
        <path d="M 0 0 L 10 5 L 0 10 z" fill="#8795a1" />
      </marker>
    </defs>
    ${edges.map(({ edge, text, curve, label }) => {
      const key = `${edge.source}>${edge.target}`;
      return html`<${Edge} key=${key} edge=${edge} text=${text} curve=${curve} label=${label}
        selected=${selectedEdge === key} onSelect=${() => select({ edge: key })} />`;
    })}
    ${topology.nodes.map((node) => html`<${Node} key=${node.id} node=${node} at=${positions.get(node.id)}
      selected=${selectedNode === node.id} onSelect=${() => select({ node: node.id })} />`)}
  </svg>
  <p class="legend muted small">Size: request rate · colour: error rate
    <span class="swatch" style="background:${errorColor(0)}"></span>0%
    <span class="swatch" style="background:${errorColor(0.005)}"></span>${'< 1%'}
    <span class="swatch" style="background:${errorColor(0.02)}"></span>${'< 5%'}
    <span class="swatch" style="background:${errorColor(0.1)}"></span>${'≥ 5%'} · edges: calls/s · error rate · p99 as the caller saw it · click a node or an edge for details</p>`;
}

function Edge({ edge, text, curve, label, selected, onSelect }) {
  const color = edge.errors > 0 ? errorColor(edge.error_rate) : '#8795a1';
  const widthPx = Math.min(6, 1.2 + Math.log10(1 + edge.rate * 20));
  return html`<g class=${`edge${selected ? ' selected' : ''}`} data-edge=${`${edge.source}>${edge.target}`}
      onClick=${(e) => { e.stopPropagation(); onSelect(); }}>
    <title>${edge.source} → ${edge.target}: ${text}</title>
    <path d=${curve.d} class="edge-hit" />
    <path d=${curve.d} class="edge-line" stroke=${color} stroke-width=${widthPx} marker-end="url(#arrow)" />
    <text x=${label.x} y=${label.y} dy="0.35em" class="edge-label" text-anchor="middle">${text}</text>
  </g>`;
}

function Node({ node, at, selected, onSelect }) {
  const r = radius(node.rate);
  const fill = errorColor(node.error_rate);
  const shape = node.kind === 'database'
    ? html`<rect x=${-r} y=${-r * 0.85} width=${2 * r} height=${1.7 * r} rx=${r * 0.5} class="node-shape" fill=${fill} />`
    : node.kind === 'messaging'
      ? html`<polygon points=${`${-r},0 ${-r / 2},${-r * 0.87} ${r / 2},${-r * 0.87} ${r},0 ${r / 2},${r * 0.87} ${-r / 2},${r * 0.87}`} class="node-shape" fill=${fill} />`
      : html`<circle r=${r} class=${`node-shape${node.kind === 'external' ? ' external' : ''}`} fill=${fill} />`;
  const icon = { database: 'DB', messaging: 'Q', external: '↗' }[node.kind] ?? '';
  return html`<g class=${`node${selected ? ' selected' : ''}`} transform="translate(${at.x} ${at.y})" data-node=${node.id}
      tabindex="0" role="button" aria-label=${`${KIND_LABEL[node.kind] ?? node.kind} ${node.id}`}
      onClick=${(e) => { e.stopPropagation(); onSelect(); }} onKeyDown=${(e) => e.key === 'Enter' && onSelect()}>
    <title>${node.id} (${KIND_LABEL[node.kind] ?? node.kind}): ${node.calls} calls, ${node.errors} errors</title>
    ${shape}
    <text class="node-icon" text-anchor="middle" dy="0.35em">${icon}</text>
    <text class="node-name" text-anchor="middle" y=${r + 16}>${node.id}</text>
    <text class="node-stats" text-anchor="middle" y=${r + 31}>${callSummary(node)}</text>
  </g>`;
}

function Stats({ item }) {
  return html`<dl class="stats">
    <div><dt>Rate</dt><dd>${formatRate(item.rate)}</dd></div>
    <div><dt>Error rate</dt><dd style=${errorStyle(item)}>${formatPct(item.error_rate)}</dd></div>
    <div><dt>p50</dt><dd>${formatMs(item.p50_ms)}</dd></div>
    <div><dt>p95</dt><dd>${formatMs(item.p95_ms)}</dd></div>
    <div><dt>p99</dt><dd>${formatMs(item.p99_ms)}</dd></div>
    <div><dt>Calls</dt><dd>${item.calls} (${item.errors} failed)</dd></div>
  </dl>`;
}

function NodePanel({ id, topology }) {
  const { range } = useContext(AppContext);
  const node = topology.nodes.find((n) => n.id === id);
  const operations = useApi(node && node.kind === 'service' ? apiUrl('top', { service: id, by: 'impact', limit: 15, ...rangeParams(range) }) : null);
  if (!node) return html`<${Empty}>${id} made or received no calls in this window.<//>`;
  const incoming = topology.edges.filter((e) => e.target === id);
  const outgoing = topology.edges.filter((e) => e.source === id);
  const traceService = node.kind === 'service' ? id : incoming[0]?.source;
  return html`<div class="panel" data-testid="node-panel">
    <button class="close" aria-label="Close" onClick=${() => setParams({ node: null })}>×</button>
    <h2>${id}</h2>
    <p class="muted">${KIND_LABEL[node.kind] ?? node.kind}</p>
    <${Stats} item=${node} />
    <p class="actions">
      <${Link} to=${href(`/service/${encodeURIComponent(id)}`)} class="button">Dashboard<//>
      ${traceService ? html`<${Link} to=${href('/search', { service: traceService })} class="button">Traces<//>
      <${Link} to=${href('/search', { service: traceService, error: 'true' })} class="button">Error traces<//>` : null}
    </p>
    ${node.kind === 'service' ? html`<h3>Operations by time spent</h3>
      <${Loaded} result=${operations} what="operations">
        ${(top) => top.data.length === 0 ? html`<p class="muted">No operations.</p>` : html`<table class="compact">
          <thead><tr><th>Operation</th><th>Rate</th><th>Err</th><th>p99</th></tr></thead>
          <tbody>${top.data.map((op) => html`<tr>
            <td><${Link} to=${href(`/service/${encodeURIComponent(id)}`, { operation: op.operation, kind: op.span_kind })}>${op.operation}<//> <span class="kind">${op.span_kind}</span></td>
            <td>${formatRate(op.rate)}</td><td>${formatPct(op.error_rate)}</td><td>${formatMs(op.p99_ms)}</td></tr>`)}
          </tbody></table>`}
      <//>` : null}
    <${EdgeList} title="Called by" edges=${incoming} other=${(e) => e.source} />
    <${EdgeList} title="Calls" edges=${outgoing} other=${(e) => e.target} />
  </div>`;
}

function EdgeList({ title, edges, other }) {
  if (edges.length === 0) return null;
  return html`<h3>${title}</h3><ul class="edge-list">${edges.map((e) => html`<li>
    <a href="#" onClick=${(event) => { event.preventDefault(); setParams({ node: null, edge: `${e.source}>${e.target}` }); }}>${other(e)}</a>
    <span class="muted small"> ${callSummary(e)}</span></li>`)}</ul>`;
}

function EdgePanel({ edge: key, topology }) {
  const [source, target] = key.split('>');
  const edge = topology.edges.find((e) => e.source === source && e.target === target);
  if (!edge) return html`<${Empty}>No calls from ${source} to ${target} in this window.<//>`;
  const traceService = edge.target_kind === 'service' ? target : source;
  return html`<div class="panel" data-testid="edge-panel">
    <button class="close" aria-label="Close" onClick=${() => setParams({ edge: null })}>×</button>
    <h2>${source} → ${target}</h2>
    <p class="muted">calls from ${source} (${edge.source_kind}) to ${target} (${edge.target_kind}); latency as the caller saw it</p>
    <${Stats} item=${edge} />
    <p class="actions"><${Link} to=${href('/search', { service: traceService })} class="button">Traces<//>
      <${Link} to=${href('/search', { service: traceService, error: 'true' })} class="button">Error traces<//></p>
    <${RedCharts} query=${{ source, target }} compact=${true} />
  </div>`;
}
