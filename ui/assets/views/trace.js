// One trace as a waterfall: collapsible subtrees, errors in red, the critical path marked, span
// details beside it. Rows are virtualised, so a trace of 10,000 spans scrolls like one of ten.
import { html, Component, useContext, useMemo, useState, useEffect, useRef, useCallback } from '../vendor/preact-htm.js';
import { AppContext } from '../context.js';
import { useApi, apiUrl } from '../api.js';
import { Link, href, setParams, markReady } from '../route.js';
import { Loading, Failure } from '../states.js';
import { formatNanos, formatClock, serviceColor } from '../format.js';

const ROW_HEIGHT = 24;
/** Rows drawn above and below the visible ones, so a fast scroll does not show blanks. */
const OVERSCAN = 12;
const INDENT_PX = 14;
const MAX_INDENT_LEVELS = 40;

/** Parent/child structure, pre-order, depths and subtree sizes of a trace's spans. */
export function buildTrace(spans) {
  const n = spans.length;
  const index = new Map();
  spans.forEach((s, i) => index.set(s.span_id, i));
  const start = spans.map((s) => s.start_unix_nano);
  const end = spans.map((s) => s.start_unix_nano + s.duration_nano);
  const children = Array.from({ length: n }, () => []);
  const roots = [];
  spans.forEach((s, i) => {
    const parent = s.parent_span_id ? index.get(s.parent_span_id) : undefined;
    if (parent === undefined || parent === i) roots.push(i);
    else children[parent].push(i);
  });
  const byStart = (a, b) => start[a] - start[b] || a - b;
  children.forEach((c) => c.sort(byStart));
  roots.sort(byStart);
  const order = [];
  const depth = new Int32Array(n);
  const seen = new Uint8Array(n);
  const walk = (root) => {
    const stack = [root];
    while (stack.length) {
      const i = stack.pop();
      if (seen[i]) continue;
      seen[i] = 1;
      order.push(i);
      for (let k = children[i].length - 1; k >= 0; k--) {
        const c = children[i][k];
        if (!seen[c]) {
          depth[c] = depth[i] + 1;
          stack.push(c);
        }
      }
    }
  };
  roots.forEach(walk);
  // Spans whose parents form a cycle are reached from no root: show them as roots.
  for (let i = 0; i < n; i++) {
    if (!seen[i]) {
      roots.push(i);
      depth[i] = 0;
      walk(i);
    }
  }
  const descendants = new Int32Array(n);
  for (let k = order.length - 1; k >= 0; k--) {
    const i = order[k];
    for (const c of children[i]) if (depth[c] === depth[i] + 1) descendants[i] += 1 + descendants[c];
  }
  const traceStart = Math.min(...start);
  const traceEnd = Math.max(...end);
  const critical = criticalPath(roots, children, start, end);
  const errors = order.filter((i) => spans[i].status_code === 'error');
  return { spans, children, roots, order, depth, descendants, start, end, traceStart, traceEnd, critical, errors, index };
}

/**
 * The spans that decide the trace's duration: from the root that ends last, the child that
 * finishes last before the parent ends, then the child that finishes last before that one
 * started, and so on, recursively (as Jaeger and Tempo mark it).
 */
export function criticalPath(roots, children, start, end) {
  const on = new Uint8Array(start.length);
  if (roots.length === 0) return on;
  const root = roots.reduce((a, b) => (end[b] > end[a] ? b : a));
  const stack = [[root, end[root]]];
  while (stack.length) {
    const [i, bound] = stack.pop();
    if (on[i]) continue;
    on[i] = 1;
    let cursor = Math.min(end[i], bound);
    const latestFirst = [...children[i]].sort((a, b) => end[b] - end[a]);
    for (const c of latestFirst) {
      if (cursor <= start[i]) break;
      if (end[c] > cursor || start[c] >= cursor) continue;
      stack.push([c, cursor]);
      cursor = start[c];
    }
  }
  return on;
}

/** The pre-order rows left when the `collapsed` spans' subtrees are hidden. */
export function visibleRows(trace, collapsed) {
  if (collapsed.size === 0) return trace.order;
  const rows = [];
  const { order, descendants } = trace;
  for (let k = 0; k < order.length; k++) {
    const i = order[k];
    rows.push(i);
    if (collapsed.has(i)) k += descendants[i];
  }
  return rows;
}

export function TraceView() {
  const { route } = useContext(AppContext);
  const id = route.arg;
  const result = useApi(apiUrl(`traces/${encodeURIComponent(id)}`), { refresh: false });
  if (result.error) {
    return result.error.status === 404
      ? html`<div class="state empty" role="status">No trace <code>${id}</code> is stored: it may not have arrived yet, or it has expired. <${Link} to=${href('/search')}>Search traces<//>.</div>`
      : html`<${Failure} what=${`trace ${id}`} error=${result.error} />`;
  }
  if (!result.data) return html`<${Loading} what=${`trace ${id}`} />`;
  return html`<${Trace} key=${id} spans=${result.data.spans} traceId=${id} />`;
}

function Trace({ spans, traceId }) {
  const { route } = useContext(AppContext);
  const trace = useMemo(() => buildTrace(spans), [spans]);
  const [collapsed, setCollapsed] = useState(() => new Set());
  const rows = useMemo(() => visibleRows(trace, collapsed), [trace, collapsed]);
  const selectedId = route.params.get('span');
  const selected = selectedId !== null ? trace.index.get(selectedId) : undefined;
  // A span to bring into view at the next render: the deep-linked one at first.
  const scrollTo = useRef(selected ?? null);
  // Stable callbacks, so that rows whose props did not change skip rendering while scrolling.
  const select = useCallback((i) => setParams({ span: i === undefined ? null : spans[i].span_id }, { replace: true }), [spans]);
  const toggle = useCallback((i) => setCollapsed((c) => {
    const next = new Set(c);
    if (next.has(i)) next.delete(i);
    else next.add(i);
    return next;
  }), []);
  const nextError = () => {
    const position = selected === undefined ? -1 : trace.order.indexOf(selected);
    const next = trace.errors.find((i) => trace.order.indexOf(i) > position) ?? trace.errors[0];
    setCollapsed(new Set());
    scrollTo.current = next;
    select(next);
  };
  // The waterfall's keys: ↑/↓ move between visible rows, → expands or steps into the first
  // child, ← collapses or steps out to the parent, Home/End, and Escape closes the details.
  const onKey = (event) => {
    const position = selected === undefined ? -1 : rows.indexOf(selected);
    const parent = selected === undefined ? undefined : trace.index.get(spans[selected].parent_span_id);
    const open = selected !== undefined && trace.children[selected].length > 0;
    let next;
    switch (event.key) {
      case 'ArrowDown': next = rows[Math.min(rows.length - 1, position + 1)]; break;
      case 'ArrowUp': next = rows[Math.max(0, position - 1)]; break;
      case 'Home': next = rows[0]; break;
      case 'End': next = rows[rows.length - 1]; break;
      case 'ArrowRight':
        if (open && collapsed.has(selected)) toggle(selected);
        else if (open) next = rows[position + 1];
        break;
      case 'ArrowLeft':
        if (open && !collapsed.has(selected)) toggle(selected);
        else if (parent !== undefined && parent !== selected) next = parent;
        break;
      case 'Escape': select(undefined); break;
      default: return;
    }
    event.preventDefault();
    if (next !== undefined) {
      scrollTo.current = next;
      select(next);
    }
  };
  const root = spans[trace.roots[0]];
  const services = new Set(spans.map((s) => s.service));
  const maxDepth = Math.max(...trace.depth) + 1;
  return html`<div class=${`trace-layout${selected !== undefined ? ' with-details' : ''}`}>
    <section class="trace-main">
      <div class="trace-head">
        <h1><span class="service-dot" style=${`background:${serviceColor(root.service)}`}></span>${root.service}: ${root.name}</h1>
        <dl class="trace-facts">
          <div><dt>Trace</dt><dd><code>${traceId}</code></dd></div>
          <div><dt>Started</dt><dd>${formatClock(trace.traceStart / 1e9, true)}</dd></div>
          <div><dt>Duration</dt><dd>${formatNanos(trace.traceEnd - trace.traceStart)}</dd></div>
          <div><dt>Spans</dt><dd data-testid="span-count">${spans.length}</dd></div>
          <div><dt>Services</dt><dd>${services.size}</dd></div>
          <div><dt>Depth</dt><dd>${maxDepth}</dd></div>
          <div><dt>Errors</dt><dd class=${trace.errors.length ? 'error-text' : ''}>${trace.errors.length}</dd></div>
        </dl>
        <div class="trace-tools">
          <button type="button" onClick=${() => setCollapsed(new Set())}>Expand all</button>
          <button type="button" onClick=${() => setCollapsed(new Set(trace.order.filter((i) => trace.children[i].length > 0)))}>Collapse all</button>
          ${trace.errors.length ? html`<button type="button" class="danger" onClick=${nextError}>Next error</button>` : null}
          <span class="legend small"><span class="cp-swatch"></span> critical path · keys: ↑ ↓ move, ← → collapse and expand, Esc</span>
        </div>
      </div>
      <${Waterfall} trace=${trace} rows=${rows} collapsed=${collapsed} toggle=${toggle} selected=${selected} select=${select} scrollTo=${scrollTo} onKey=${onKey} />
    </section>
    ${selected !== undefined ? html`<aside class="side-panel span-details"><${SpanDetails} span=${spans[selected]} trace=${trace} close=${() => select(undefined)} /></aside>` : null}
  </div>`;
}

function Ruler({ trace }) {
  const total = trace.traceEnd - trace.traceStart;
  return html`<div class="ruler"><div class="span-name">Service and operation</div><div class="span-timeline">
    ${[0, 0.25, 0.5, 0.75, 1].map((f) => html`<span class="tick" style=${`left:${f * 100}%`}>${formatNanos(f * total)}</span>`)}
  </div></div>`;
}

function Waterfall({ trace, rows, collapsed, toggle, selected, select, scrollTo, onKey }) {
  const scroller = useRef(null);
  const [viewport, setViewport] = useState({ top: 0, height: 800 });
  useEffect(() => {
    const element = scroller.current;
    const measure = () => setViewport({ top: element.scrollTop, height: element.clientHeight });
    measure();
    const resize = new ResizeObserver(measure);
    resize.observe(element);
    return () => resize.disconnect();
  }, []);
  useEffect(() => {
    if (scrollTo.current === null) return;
    const position = rows.indexOf(scrollTo.current);
    scrollTo.current = null;
    if (position < 0) return;
    const element = scroller.current;
    const y = position * ROW_HEIGHT;
    if (y < element.scrollTop || y > element.scrollTop + element.clientHeight - ROW_HEIGHT) {
      element.scrollTop = Math.max(0, y - element.clientHeight / 3);
    }
  });
  useEffect(() => markReady('trace'), []);
  const first = Math.max(0, Math.floor(viewport.top / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(rows.length, Math.ceil((viewport.top + viewport.height) / ROW_HEIGHT) + OVERSCAN);
  const total = trace.traceEnd - trace.traceStart || 1;
  const drawn = [];
  for (let k = first; k < last; k++) {
    drawn.push(html`<${SpanRow} key=${rows[k]} i=${rows[k]} top=${k * ROW_HEIGHT} trace=${trace} total=${total}
      collapsed=${collapsed.has(rows[k])} toggle=${toggle} selected=${selected === rows[k]} select=${select} />`);
  }
  return html`<div class="waterfall">
    <${Ruler} trace=${trace} />
    <div class="waterfall-scroll" ref=${scroller} data-testid="waterfall" data-rows=${rows.length}
        tabindex="0" role="grid" aria-label="Spans" onKeyDown=${onKey}
        onScroll=${(e) => setViewport({ top: e.currentTarget.scrollTop, height: e.currentTarget.clientHeight })}>
      <div class="waterfall-rows" style=${`height:${rows.length * ROW_HEIGHT}px`}>${drawn}</div>
    </div>
  </div>`;
}

/** A row renders again only when one of its props changed: scrolling adds and drops rows, but
 * leaves the others as they are. */
class SpanRow extends Component {
  shouldComponentUpdate(next) {
    for (const key in next) if (next[key] !== this.props[key]) return true;
    return false;
  }

  render(props) {
    return spanRow(props);
  }
}

function spanRow({ i, top, trace, total, collapsed, toggle, selected, select }) {
  const span = trace.spans[i];
  const color = serviceColor(span.service);
  const left = ((trace.start[i] - trace.traceStart) / total) * 100;
  const width = Math.max(0.15, (span.duration_nano / total) * 100);
  const error = span.status_code === 'error';
  const hasChildren = trace.children[i].length > 0;
  const depth = trace.depth[i];
  const classes = ['span-row', error && 'error', selected && 'selected', trace.critical[i] && 'critical'].filter(Boolean).join(' ');
  const labelLeft = left + width > 80;
  return html`<div class=${classes} style=${`transform:translateY(${top}px)`} data-span=${span.span_id} role="row"
      aria-selected=${selected} onClick=${() => select(selected ? undefined : i)}>
    <div class="span-name" style=${`padding-left:${4 + Math.min(depth, MAX_INDENT_LEVELS) * INDENT_PX}px`} title=${`${span.service}: ${span.name} (depth ${depth + 1})`}>
      ${hasChildren
        ? html`<button type="button" class="toggle" aria-label=${collapsed ? 'Expand' : 'Collapse'} aria-expanded=${!collapsed}
            onClick=${(e) => { e.stopPropagation(); toggle(i); }}>${collapsed ? '▸' : '▾'}</button>`
        : html`<span class="toggle-space"></span>`}
      <span class="service-dot" style=${`background:${color}`}></span>
      <span class="service">${span.service}</span>
      <span class="operation">${span.name}</span>
      ${collapsed ? html`<span class="hidden-count">+${trace.descendants[i]}</span>` : null}
      ${error ? html`<span class="error-mark" title="error">!</span>` : null}
    </div>
    <div class="span-timeline">
      <div class="bar" style=${`left:${left}%;width:${width}%;background:${error ? '#d64545' : color}`}></div>
      <span class="bar-label" style=${labelLeft ? `right:${100 - left}%` : `left:${left + width}%`}>${formatNanos(span.duration_nano)}</span>
    </div>
  </div>`;
}

function valueText(value) {
  if (value === null || value === undefined) return '';
  return typeof value === 'object' ? JSON.stringify(value) : String(value);
}

function KeyValues({ title, values }) {
  const entries = Object.entries(values ?? {}).sort(([a], [b]) => a.localeCompare(b));
  return html`<h3>${title} <span class="muted small">${entries.length}</span></h3>
    ${entries.length === 0 ? html`<p class="muted small">none</p>` : html`<table class="kv"><tbody>
      ${entries.map(([key, value]) => html`<tr><th>${key}</th><td>${valueText(value)}</td></tr>`)}
    </tbody></table>`}`;
}

function SpanDetails({ span, trace, close }) {
  const i = trace.index.get(span.span_id);
  const offset = trace.start[i] - trace.traceStart;
  const parent = span.parent_span_id ? trace.index.get(span.parent_span_id) : undefined;
  return html`<div class="panel" data-testid="span-details">
    <button class="close" aria-label="Close" onClick=${close}>×</button>
    <h2>${span.name}</h2>
    <p><span class="service-dot" style=${`background:${serviceColor(span.service)}`}></span>${span.service} · <span class="kind">${span.kind}</span></p>
    ${span.status_code === 'error' ? html`<p class="state error small">Error${span.status_message ? `: ${span.status_message}` : ''}</p>` : null}
    <dl class="stats">
      <div><dt>Duration</dt><dd>${formatNanos(span.duration_nano)}</dd></div>
      <div><dt>Starts at</dt><dd>+${formatNanos(offset)}</dd></div>
      <div><dt>Status</dt><dd>${span.status_code}</dd></div>
      <div><dt>Critical path</dt><dd>${trace.critical[i] ? 'yes' : 'no'}</dd></div>
    </dl>
    <table class="kv"><tbody>
      <tr><th>span id</th><td><code>${span.span_id}</code></td></tr>
      <tr><th>parent</th><td>${span.parent_span_id
        ? parent !== undefined
          ? html`<a href="#" onClick=${(e) => { e.preventDefault(); setParams({ span: span.parent_span_id }, { replace: true }); }}><code>${span.parent_span_id}</code></a>`
          : html`<code>${span.parent_span_id}</code> <span class="muted">(not in this trace)</span>`
        : html`<span class="muted">root</span>`}</td></tr>
    </tbody></table>
    <${KeyValues} title="Attributes" values=${span.attributes} />
    <${KeyValues} title="Resource" values=${span.resource} />
    <h3>Events <span class="muted small">${span.events.length}</span></h3>
    ${span.events.length === 0 ? html`<p class="muted small">none</p>` : html`<ol class="events">${span.events.map((e) => html`<li>
      <strong>${e.name}</strong> <span class="muted">+${formatNanos(e.time_unix_nano - span.start_unix_nano)}</span>
      ${Object.keys(e.attributes ?? {}).length ? html`<table class="kv"><tbody>${Object.entries(e.attributes).map(([k, v]) => html`<tr><th>${k}</th><td>${valueText(v)}</td></tr>`)}</tbody></table>` : null}
    </li>`)}</ol>`}
    <h3>Links <span class="muted small">${span.links.length}</span></h3>
    ${span.links.length === 0 ? html`<p class="muted small">none</p>` : html`<ul class="links">${span.links.map((l) => html`<li>
      ${l.trace_id ? html`<${Link} to=${href(`/trace/${l.trace_id}`, { span: l.span_id })}><code>${l.trace_id.slice(0, 16)}… / ${l.span_id}</code><//>` : html`<span class="muted">link without a trace id</span>`}
      ${Object.keys(l.attributes ?? {}).length ? html`<table class="kv"><tbody>${Object.entries(l.attributes).map(([k, v]) => html`<tr><th>${k}</th><td>${valueText(v)}</td></tr>`)}</tbody></table>` : null}
    </li>`)}</ul>`}
  </div>`;
}
