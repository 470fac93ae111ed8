// Metrics: a PromQL editor (metric names, then inside a selector's braces its label names and
// values, from the Prometheus API to complete; the metric's label names beside it), the answer
// as a table at the range's end or as a graph over the range with the exemplars of its series
// drawn on it, and those exemplars listed: each a link to its trace.
import { html, useContext, useState } from '../vendor/preact-htm.js';
import { AppContext } from '../context.js';
import { useApi } from '../api.js';
import { Link, href, setParams, withParams } from '../route.js';
import { Loaded, Empty } from '../states.js';
import { TimeChart } from '../charts.js';
import { formatClock, serviceColor } from '../format.js';

/** At most this many series are drawn; the table shows them all. */
const MAX_DRAWN = 20;

function promUrl(path, params) {
  return withParams(`/prometheus/api/v1/${path}`, '', params);
}

function seriesName(metric) {
  const { __name__: name = '', ...labels } = metric;
  const inner = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).join(', ');
  return `${name}{${inner}}`;
}

/** A value as Prometheus writes it, shortened for reading. */
function formatValue(v) {
  const n = Number(v);
  if (!Number.isFinite(n)) return String(v);
  if (n !== 0 && (Math.abs(n) >= 1e6 || Math.abs(n) < 1e-3)) return n.toExponential(3);
  return String(Math.round(n * 1e4) / 1e4);
}

/**
 * What the end of a draft is completing inside a selector's braces: a label value
 * (`{route="/p`) or a label name (`{route="/pay", `), with the text before it.
 */
function completing(draft) {
  const value = draft.match(/\{[^{}]*?([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)$/);
  if (value) return { kind: 'value', label: value[1], before: draft.slice(0, draft.length - value[3].length) };
  const name = draft.match(/\{(?:[^{}"]*"[^"]*"\s*,\s*)*([a-zA-Z_][a-zA-Z0-9_]*)?$/);
  if (name) return { kind: 'name', before: draft.slice(0, draft.length - (name[1] ?? '').length) };
  return null;
}

/** The metric a query is about: its first name-like word that is not a function or keyword. */
function metricOf(query) {
  const words = query.match(/[a-zA-Z_:][a-zA-Z0-9_:]*(?=\s*(\{|\[|$|\)|\s))/g) ?? [];
  return words.find((w) => !/^(by|without|on|ignoring|group_left|group_right|offset|bool|and|or|unless)$/.test(w)) ?? null;
}

export function ExploreView() {
  const { route, range } = useContext(AppContext);
  const query = route.params.get('q') ?? '';
  const tab = route.params.get('tab') === 'graph' ? 'graph' : 'table';
  const [draft, setDraft] = useState(query);
  const names = useApi(promUrl('label/__name__/values', {}), { refresh: false });
  const metric = metricOf(draft);
  const labels = useApi(metric ? promUrl('labels', { 'match[]': metric }) : null, { refresh: false });
  // Inside braces the editor completes label names, then the values the metric has for one.
  const inside = metric ? completing(draft) : null;
  const values = useApi(inside?.kind === 'value'
    ? promUrl(`label/${encodeURIComponent(inside.label)}/values`, { 'match[]': metric, limit: 500 }) : null, { refresh: false });
  const suggestions = inside?.kind === 'value' ? (values.data?.data ?? []).map((v) => `${inside.before}${v}"`)
    : inside?.kind === 'name' ? (labels.data?.data ?? []).filter((l) => l !== '__name__').map((l) => `${inside.before}${l}=`)
      : (names.data?.data ?? []);
  const run = (event) => {
    event.preventDefault();
    setParams({ q: draft.trim() });
  };
  return html`<div class="explore">
    <div class="view-head"><h1>Metrics</h1><span class="muted">PromQL · ${range.label}</span></div>
    <form class="promql-form" onSubmit=${run}>
      <input class="promql-input" aria-label="PromQL query" list="metric-names" placeholder="rate(http_server_requests_total[5m])"
        value=${draft} onInput=${(e) => setDraft(e.currentTarget.value)} spellcheck="false" autocomplete="off" />
      <datalist id="metric-names" data-testid="promql-completions">${suggestions.map((n) => html`<option value=${n} />`)}</datalist>
      <button type="submit" class="button">Run</button>
    </form>
    ${metric && labels.data ? html`<div class="muted label-hint" data-testid="label-hint">labels of ${metric}: ${labels.data.data.filter((l) => l !== '__name__').join(', ') || 'none'}</div>` : null}
    <div class="tabs" role="tablist">
      ${['table', 'graph'].map((t) => html`<button type="button" role="tab" aria-selected=${t === tab} class=${t === tab ? 'active' : ''}
        onClick=${() => setParams({ tab: t === 'table' ? null : t }, { replace: true })}>${t === 'table' ? 'Table' : 'Graph'}</button>`)}
    </div>
    ${query === '' ? html`<${Empty}>Write a PromQL query and press Enter. Span metrics are there from the first span: try <code>sum by (service) (rate(traces_spanmetrics_calls_total[5m]))</code>.<//>`
      : tab === 'table' ? html`<${InstantTable} query=${query} range=${range} />` : html`<${RangeGraph} query=${query} range=${range} />`}
  </div>`;
}

/** Prometheus's warnings and infos on an answer, shown above it. */
function Notes({ answer }) {
  const notes = [...(answer.warnings ?? []).map((t) => ['warning', t]), ...(answer.infos ?? []).map((t) => ['info', t])];
  if (notes.length === 0) return null;
  return html`<ul class="promql-notes" data-testid="promql-notes">${notes.map(([kind, text]) => html`<li class=${kind}>${text}</li>`)}</ul>`;
}

const noted = (render) => (a) => html`<${Notes} answer=${a} />${render(a)}`;

function InstantTable({ query, range }) {
  const answer = useApi(promUrl('query', { query, time: range.end }));
  return html`<${Loaded} result=${answer} what="the query" ready="explore">
    ${noted((a) => {
      const { resultType, result } = a.data;
      if (resultType === 'scalar' || resultType === 'string') return html`<table class="data promql-table"><tbody><tr><td>${resultType}</td><td class="num">${formatValue(result[1])}</td></tr></tbody></table>`;
      if (result.length === 0) return html`<${Empty}>No series at ${formatClock(range.end, true)}.<//>`;
      return html`<table class="data promql-table">
        <thead><tr><th>Series</th><th class="num">Value</th></tr></thead>
        <tbody>${result.map((s) => html`<tr><td class="series">${seriesName(s.metric)}</td>
          <td class="num">${s.value ? formatValue(s.value[1]) : `${s.values.length} points`}</td></tr>`)}</tbody>
      </table>`;
    })}
  <//>`;
}

function RangeGraph({ query, range }) {
  // About 250 points across the range, on whole seconds.
  const step = Math.max(1, Math.ceil((range.end - range.start) / 250));
  const answer = useApi(promUrl('query_range', { query, start: range.start, end: range.end, step }));
  const exemplars = useApi(promUrl('query_exemplars', { query, start: range.start, end: range.end }));
  return html`<${Loaded} result=${answer} what="the query" ready="explore">
    ${noted((a) => {
      const result = a.data.result;
      if (result.length === 0) return html`<${Empty}>No series ${range.label.toLowerCase()}.<//>`;
      const times = [];
      for (let t = range.start; t <= range.end; t += step) times.push(t);
      const drawn = result.slice(0, MAX_DRAWN).map((s) => {
        const byTime = new Map(s.values.map(([t, v]) => [Math.round(t), Number(v)]));
        const name = seriesName(s.metric);
        return { label: name, color: serviceColor(name), values: times.map((t) => (byTime.has(t) ? byTime.get(t) : null)) };
      });
      return html`<div>
        ${result.length > MAX_DRAWN ? html`<p class="muted">Drawing ${MAX_DRAWN} of ${result.length} series.</p>` : null}
        <${TimeChart} title=${query} times=${times} series=${drawn} format=${formatValue} sync="explore" testId="promql-graph"
          marks=${exemplarMarks(exemplars)}
          onZoom=${(start, end) => setParams({ from: String(Math.floor(start)), to: String(Math.ceil(end)) })} height=${280} />
        <${Exemplars} result=${exemplars} />
      </div>`;
    })}
  <//>`;
}

/** The exemplars that name a trace, largest value first, each with its series' name. */
function tracedExemplars(result) {
  const sets = result.data?.data ?? [];
  return sets.flatMap((s) => s.exemplars.map((e) => ({ ...e, series: seriesName(s.seriesLabels) })))
    .filter((e) => e.labels.trace_id)
    .sort((a, b) => Number(b.value) - Number(a.value));
}

/** The exemplars as marks on the graph, each a link to its trace. */
function exemplarMarks(result) {
  return tracedExemplars(result).slice(0, 200).map((e) => ({
    t: Number(e.timestamp),
    v: Number(e.value),
    to: href(`/trace/${e.labels.trace_id}`),
    title: `${e.series} = ${formatValue(e.value)} at ${formatClock(e.timestamp, true, true)}\ntrace ${e.labels.trace_id}`,
  }));
}

/** The exemplars of the graphed series: each a point in time and a link to its trace. */
function Exemplars({ result }) {
  const all = tracedExemplars(result);
  if (all.length === 0) return null;
  return html`<section class="exemplars" data-testid="exemplars">
    <h2>Exemplars <span class="muted">${all.length}, largest value first</span></h2>
    <table class="data"><thead><tr><th>Time</th><th class="num">Value</th><th>Series</th><th>Trace</th></tr></thead>
      <tbody>${all.slice(0, 50).map((e) => html`<tr>
        <td>${formatClock(e.timestamp, true, true)}</td><td class="num">${formatValue(e.value)}</td><td class="series">${e.series}</td>
        <td><${Link} to=${href(`/trace/${e.labels.trace_id}`)}>${e.labels.trace_id.slice(0, 16)}…<//></td></tr>`)}</tbody></table>
  </section>`;
}

/**
 * SOFALookout's view of metrics: by application. Without an app, every value of the `app`
 * label; with one, its metrics grouped by name, each series' value at the range's end, and a
 * link to graph the metric.
 */
export function AppsView() {
  const { route, range } = useContext(AppContext);
  const app = route.arg;
  const apps = useApi(app ? null : promUrl('label/app/values', { start: range.start, end: range.end }));
  const series = useApi(app ? promUrl('query', { query: `{app=${JSON.stringify(app)}}`, time: range.end }) : null);
  if (!app) {
    return html`<div class="explore">
      <div class="view-head"><h1>Applications</h1><span class="muted">metrics by their <code>app</code> label · ${range.label}</span></div>
      <${Loaded} result=${apps} what="the applications" ready="apps">
        ${(a) => a.data.length === 0 ? html`<${Empty}>No series carries an <code>app</code> label ${range.label.toLowerCase()}; SOFALookout clients set it.<//>`
          : html`<ul class="app-list">${a.data.map((name) => html`<li><${Link} to=${href(`/apps/${encodeURIComponent(name)}`)}>${name}<//></li>`)}</ul>`}
      <//>
    </div>`;
  }
  return html`<div class="explore">
    <div class="view-head"><h1>${app}</h1><span class="muted">application metrics · ${range.label}</span></div>
    <${Loaded} result=${series} what="the application's metrics" ready="apps">
      ${(a) => {
        const byName = new Map();
        for (const s of a.data.result) {
          const name = s.metric.__name__ ?? '';
          if (!byName.has(name)) byName.set(name, []);
          byName.get(name).push(s);
        }
        if (byName.size === 0) return html`<${Empty}>${app} has no series at ${formatClock(range.end, true)}.<//>`;
        return html`${[...byName.keys()].sort().map((name) => html`<section class="app-metric" data-metric=${name}>
          <h2>${name} <${Link} to=${href('/explore', { tab: 'graph', q: `${name}{app=${JSON.stringify(app)}}` })} class="button">Graph<//></h2>
          <table class="data promql-table"><tbody>${byName.get(name).map((s) => {
            const { __name__: _n, app: _a, ...rest } = s.metric;
            return html`<tr><td class="series">${Object.entries(rest).map(([k, v]) => `${k}="${v}"`).join(', ') || '—'}</td><td class="num">${formatValue(s.value[1])}</td></tr>`;
          })}</tbody></table>
        </section>`)}`;
      }}
    <//>
  </div>`;
}
