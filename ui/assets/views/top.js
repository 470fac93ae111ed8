// Top-N operations: a table sorted by the server (p99, p50, error rate, rate or time spent),
// filtered by service and span kind, with each row's trend as a sparkline.
import { html, useContext } from '../vendor/preact-htm.js';
import { AppContext } from '../context.js';
import { useApi, apiUrl } from '../api.js';
import { Link, href, setParams } from '../route.js';
import { Loaded, Empty } from '../states.js';
import { Sparkline } from '../charts.js';
import { MeasureCells, RateNote } from '../measures.js';
import { serviceChoices } from './search.js';
import { rangeParams, rangePhrase, SPAN_KINDS } from '../format.js';

/** Sortable columns: the API's `by`, the header, and how a row's trend reads that measure. */
const ORDERS = {
  rate: { label: 'Rate', trend: (p) => p.rate, color: '#4e79a7' },
  error_rate: { label: 'Error rate', trend: (p) => (p.calls ? p.error_rate : null), color: '#d64545' },
  p50: { label: 'p50', trend: (p) => p.p50_ms, color: '#59a14f' },
  p99: { label: 'p99', trend: (p) => p.p99_ms, color: '#e0a020' },
  impact: { label: 'Time spent', trend: (p) => p.calls * p.mean_ms, color: '#8f6ad1' },
};

export function TopView() {
  const { route, range } = useContext(AppContext);
  const by = ORDERS[route.params.get('by')] ? route.params.get('by') : 'p99';
  const service = route.params.get('service') ?? '';
  const kind = route.params.get('kind') ?? '';
  const limit = route.params.get('limit') ?? '20';
  const services = useApi(apiUrl('services', rangeParams(range)));
  const top = useApi(apiUrl('top', { by, service, span_kind: kind, limit, ...rangeParams(range) }));
  return html`<div class="top">
    <div class="view-head">
      <h1>Top operations</h1>
      <span class="muted">by ${ORDERS[by].label} · ${range.label}</span>
      <${RateNote} seconds=${top.data?.rate_seconds} range=${range} />
      <span class="spacer"></span>
      <label>Service <select aria-label="Service" value=${service} onChange=${(e) => setParams({ service: e.currentTarget.value }, { replace: true })}>
        <option value="">All</option>
        ${serviceChoices(services.data?.data ?? [], service).map((name) => html`<option value=${name}>${name}</option>`)}
      </select></label>
      <label>Kind <select aria-label="Span kind" value=${kind} onChange=${(e) => setParams({ kind: e.currentTarget.value }, { replace: true })}>
        <option value="">All</option>
        ${SPAN_KINDS.map((k) => html`<option value=${k}>${k}</option>`)}
      </select></label>
      <label>Show <select aria-label="Rows" value=${limit} onChange=${(e) => setParams({ limit: e.currentTarget.value }, { replace: true })}>
        ${['10', '20', '50', '100'].map((n) => html`<option value=${n}>${n}</option>`)}
      </select></label>
    </div>
    <${Loaded} result=${top} what="the top operations" ready="top">
      ${(t) => t.data.length === 0
        ? html`<${Empty}>No operations${service ? ` of ${service}` : ''}${kind ? ` of kind ${kind}` : ''} ${rangePhrase(range)}.<//>`
        : html`<${TopTable} rows=${t.data} by=${by} />`}
    <//>
  </div>`;
}

function SortHeader({ order, by }) {
  const active = order === by;
  return html`<th class=${`num sortable${active ? ' sorted' : ''}`} aria-sort=${active ? 'descending' : 'none'}>
    <button type="button" onClick=${() => setParams({ by: order })} title=${`Largest ${ORDERS[order].label} first`}>${ORDERS[order].label}${active ? ' ▼' : ''}</button>
  </th>`;
}

function TopTable({ rows, by }) {
  return html`<table class="data top-table">
    <thead><tr>
      <th>Service</th><th>Operation</th><th>Kind</th>
      <${SortHeader} order="rate" by=${by} /><${SortHeader} order="error_rate" by=${by} />
      <${SortHeader} order="p50" by=${by} /><th class="num">p95</th><${SortHeader} order="p99" by=${by} />
      <${SortHeader} order="impact" by=${by} /><th>Trend (${ORDERS[by].label})</th>
    </tr></thead>
    <tbody>${rows.map((r) => html`<tr key=${`${r.service}|${r.operation}|${r.span_kind}`}>
      <td><${Link} to=${href(`/service/${encodeURIComponent(r.service)}`)}>${r.service}<//></td>
      <td><${Link} to=${href(`/service/${encodeURIComponent(r.service)}`, { operation: r.operation, kind: r.span_kind })}>${r.operation}<//></td>
      <td><span class="kind">${r.span_kind}</span></td>
      <${MeasureCells} item=${r} />
      <td class="num">${r.impact.toFixed(1)} s</td>
      <td><${Trend} row=${r} by=${by} /></td>
    </tr>`)}</tbody>
  </table>`;
}

function Trend({ row, by }) {
  const { range } = useContext(AppContext);
  const red = useApi(apiUrl('red', { service: row.service, operation: row.operation, span_kind: row.span_kind, ...rangeParams(range) }));
  if (red.error) return html`<span class="muted small" title=${red.error.message}>unavailable</span>`;
  if (!red.data) return html`<span class="sparkline-placeholder"></span>`;
  const order = ORDERS[by];
  return html`<${Sparkline} values=${red.data.points.map(order.trend)} color=${order.color} label=${`${order.label} of ${row.operation} over time`} />`;
}
