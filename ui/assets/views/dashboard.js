// A service's (or one operation's, or a database's, queue's or external API's, or one edge's)
// rate, errors and latency over time. Dragging across a chart zooms the global time range.
import { html, useContext, useMemo } from '../vendor/preact-htm.js';
import { AppContext } from '../context.js';
import { useApi, apiUrl } from '../api.js';
import { Link, href, setParams } from '../route.js';
import { Loaded, Loading, Empty } from '../states.js';
import { TimeChart } from '../charts.js';
import { MeasureCells, RateNote } from '../measures.js';
import { formatRate, formatPct, formatMs, rangeParams, rangePhrase, toIsoSeconds } from '../format.js';

/** What the map calls a node's kind; a name that is not in the catalog is taken for a service. */
const TARGET_KINDS = { database: 'database', messaging: 'queue', external: 'external API' };

export function DashboardView() {
  const { route, range } = useContext(AppContext);
  const name = route.arg;
  const catalog = useApi(apiUrl('services', rangeParams(range)));
  if (!catalog.data && !catalog.error) return html`<${Loading} what=${`${name}'s dashboard`} />`;
  const kind = catalog.data?.data.find((s) => s.name === name)?.kind ?? 'service';
  return kind === 'service'
    ? html`<${ServiceDashboard} service=${name} />`
    : html`<${TargetDashboard} target=${name} kind=${kind} />`;
}

function ServiceDashboard({ service }) {
  const { route, range } = useContext(AppContext);
  const operation = route.params.get('operation');
  const kind = route.params.get('kind');
  const operations = useApi(apiUrl(`services/${encodeURIComponent(service)}/operations`, rangeParams(range)));
  const top = useApi(apiUrl('top', { service, by: 'impact', limit: 100, ...rangeParams(range) }));
  const query = operation ? { service, operation, span_kind: kind } : { service };
  const chooseOperation = (value) => {
    if (!value) return setParams({ operation: null, kind: null });
    const [k, ...rest] = value.split(' ');
    return setParams({ operation: rest.join(' '), kind: k });
  };
  const searchParams = { service, operation };
  return html`<div class="dashboard">
    <div class="view-head">
      <h1>${service}${operation ? html` <span class="muted">/ ${operation}</span>` : null}</h1>
      <select aria-label="Operation" value=${operation ? `${kind} ${operation}` : ''} onChange=${(e) => chooseOperation(e.currentTarget.value)}>
        <option value="">All requests to ${service}</option>
        ${(operations.data?.data ?? []).map((op) => html`<option value=${`${op.span_kind} ${op.name}`}>${op.name} (${op.span_kind})</option>`)}
      </select>
      <span class="muted">${range.label}</span>
      <${RateNote} seconds=${top.data?.rate_seconds} range=${range} />
      <span class="spacer"></span>
      <${Link} to=${href('/explore', { tab: 'graph', q: `sum by (span_name) (rate(traces_spanmetrics_calls_total{service="${service}", span_kind="SPAN_KIND_SERVER"}[5m]))` })} class="button">Metrics<//>
      <${Link} to=${href('/search', searchParams)} class="button">Traces<//>
      <${Link} to=${href('/search', { ...searchParams, error: 'true' })} class="button">Error traces<//>
      <${SlowTracesLink} top=${top.data} service=${service} operation=${operation} kind=${kind} />
    </div>
    <${RedCharts} query=${query} readyAs="service" />
    <h2>Operations</h2>
    <${Loaded} result=${top} what="operations">
      ${(t) => t.data.length === 0 ? html`<${Empty}>${service} has no operations ${rangePhrase(range)}.<//>` : html`<${OperationsTable} service=${service} rows=${t.data} current=${operation} />`}
    <//>
  </div>`;
}

/** A database, queue or external API: measured by the calls that reach it, as on the map. */
function TargetDashboard({ target, kind }) {
  const { range } = useContext(AppContext);
  const topology = useApi(apiUrl('topology', rangeParams(range)));
  return html`<div class="dashboard">
    <div class="view-head">
      <h1>${target}</h1>
      <span class="kind">${TARGET_KINDS[kind] ?? kind}</span>
      <span class="muted">all calls into ${target} · ${range.label}</span>
      <${RateNote} seconds=${topology.data?.rate_seconds} range=${range} />
    </div>
    <${RedCharts} query=${{ target }} readyAs="service" />
    <h2>Callers</h2>
    <${Loaded} result=${topology} what="callers">
      ${(t) => {
        const callers = t.edges.filter((e) => e.target === target);
        return callers.length === 0 ? html`<${Empty}>Nothing called ${target} ${rangePhrase(range)}.<//>` : html`<table class="data">
          <thead><tr><th>Caller</th><th class="num">Rate</th><th class="num">Error rate</th><th class="num">p50</th><th class="num">p95</th><th class="num">p99</th><th></th></tr></thead>
          <tbody>${callers.map((e) => html`<tr>
            <td><${Link} to=${href(`/service/${encodeURIComponent(e.source)}`)}>${e.source}<//></td>
            <${MeasureCells} item=${e} />
            <td><${Link} to=${href('/map', { edge: `${e.source}>${target}` })}>on the map<//> · <${Link} to=${href('/search', { service: e.source })}>traces<//></td>
          </tr>`)}</tbody></table>`;
      }}
    <//>
  </div>`;
}

function SlowTracesLink({ top, service, operation, kind }) {
  const row = top?.data?.find((r) => r.operation === operation && (!kind || r.span_kind === kind));
  if (!operation || !row || row.p99_ms === null) return null;
  return html`<${Link} to=${href('/search', { service, operation, min_duration: `${Math.floor(row.p99_ms)}ms` })} class="button" title="Traces where this operation took at least its p99">Slowest 1%<//>`;
}

function OperationsTable({ service, rows, current }) {
  return html`<table class="data">
    <thead><tr><th>Operation</th><th>Kind</th><th class="num">Rate</th><th class="num">Error rate</th><th class="num">p50</th><th class="num">p95</th><th class="num">p99</th><th class="num">Time spent</th></tr></thead>
    <tbody>${rows.map((r) => html`<tr class=${r.operation === current ? 'current' : ''}>
      <td><${Link} to=${href(`/service/${encodeURIComponent(service)}`, { operation: r.operation, kind: r.span_kind })}>${r.operation}<//></td>
      <td><span class="kind">${r.span_kind}</span></td>
      <${MeasureCells} item=${r} />
      <td class="num">${r.impact.toFixed(1)} s</td></tr>`)}
    </tbody></table>`;
}

/** Rate, error rate and latency percentiles of `query` (see /api/v1/red) over the time range. */
export function RedCharts({ query, compact = false, readyAs = null }) {
  const { range } = useContext(AppContext);
  const red = useApi(apiUrl('red', { ...query, span_kind: query.span_kind ?? undefined, ...rangeParams(range) }));
  // A point stands for the step that starts at it: the selection takes in whole steps, from the
  // point nearest its start to the end of the step of the point nearest its end.
  const zoomTo = (step) => (start, end) => setParams({
    from: toIsoSeconds(Math.round(start / step) * step),
    to: toIsoSeconds((Math.round(end / step) + 1) * step),
  });
  return html`<div class=${`red-charts${compact ? ' compact' : ''}`}>
    <${Loaded} result=${red} what="the RED series" ready=${readyAs}>
      ${(r) => html`<${RedChartSet} points=${r.points} zoom=${zoomTo(r.step_seconds)} compact=${compact} />`}
    <//>
  </div>`;
}

function RedChartSet({ points, zoom, compact }) {
  const series = useMemo(() => {
    const times = points.map((p) => p.t);
    const pick = (f) => points.map((p) => (p.calls === 0 ? null : f(p)));
    return {
      times,
      rate: [{ label: 'requests/s', color: '#4e79a7', values: points.map((p) => p.rate) }],
      errors: [{ label: 'error rate', color: '#d64545', values: pick((p) => p.error_rate * 100) }],
      latency: [
        { label: 'p50', color: '#59a14f', values: pick((p) => p.p50_ms) },
        { label: 'p95', color: '#e0a020', values: pick((p) => p.p95_ms) },
        { label: 'p99', color: '#d64545', values: pick((p) => p.p99_ms) },
      ],
      calls: points.reduce((a, p) => a + p.calls, 0),
    };
  }, [points]);
  const height = compact ? 120 : 180;
  return html`${series.calls === 0 ? html`<p class="state empty">No calls in this window; the charts are flat.</p>` : null}
    <div class="chart-grid">
      <${TimeChart} title="Rate" times=${series.times} series=${series.rate} format=${formatRate} onZoom=${zoom} height=${height} testId="chart-rate" />
      <${TimeChart} title="Error rate" times=${series.times} series=${series.errors} format=${(v) => formatPct(v / 100)} onZoom=${zoom} height=${height} testId="chart-errors" />
      <${TimeChart} title="Latency" times=${series.times} series=${series.latency} format=${formatMs} onZoom=${zoom} height=${height} testId="chart-latency" />
    </div>
    ${compact ? null : html`<p class="muted small">Drag across a chart to zoom into that time.</p>`}`;
}

