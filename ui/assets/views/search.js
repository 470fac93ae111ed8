// Trace search: the filters of /api/v1/traces, a scatter of trace duration over time (click a dot
// to open the trace) and the list of matching traces.
import { html, useContext, useState } from '../vendor/preact-htm.js';
import { AppContext } from '../context.js';
import { useApi, apiUrl } from '../api.js';
import { Link, href, navigate, setParams } from '../route.js';
import { Loaded, Empty } from '../states.js';
import { formatNanos, formatMs, formatClock, formatAgo, serviceColor, rangeParams, rangePhrase } from '../format.js';

/** Enough traces for the scatter plot to show a shape; the API's own default is 20. */
const DEFAULT_LIMIT = '100';
const FILTERS = ['service', 'operation', 'min_duration', 'max_duration', 'min_trace_duration', 'max_trace_duration', 'error', 'limit'];
const SORTS = {
  newest: { label: 'Newest first', compare: (a, b) => b.start_unix_nano - a.start_unix_nano },
  longest: { label: 'Longest first', compare: (a, b) => b.duration_nano - a.duration_nano },
  spans: { label: 'Most spans first', compare: (a, b) => b.span_count - a.span_count },
  errors: { label: 'Most errors first', compare: (a, b) => b.error_count - a.error_count },
};

/** `key=value key2>=3 key3="a b"` → ['key=value', 'key2>=3', 'key3=a b']; invalid parts are named. */
export function parseAttributes(text) {
  const filters = [];
  const invalid = [];
  const pattern = /\s*([^\s=!<>"]+)\s*(!=|>=|<=|=|>|<)\s*("([^"]*)"|[^\s"]*)|\s*(\S+)/gy;
  let match;
  while ((match = pattern.exec(text)) !== null && match[0] !== '') {
    if (match[5] !== undefined) invalid.push(match[5]);
    else filters.push(`${match[1]}${match[2]}${match[4] ?? match[3]}`);
  }
  return { filters, invalid };
}

export function formatAttributes(filters) {
  return filters.map((f) => {
    const m = /^([^=!<>]+)(!=|>=|<=|=|>|<)(.*)$/.exec(f);
    if (!m) return f;
    return /[\s"]/.test(m[3]) || m[3] === '' ? `${m[1]}${m[2]}"${m[3]}"` : f;
  }).join(' ');
}

export function SearchView() {
  const { route, range } = useContext(AppContext);
  const params = route.params;
  const query = { ...rangeParams(range), attr: params.getAll('attr'), limit: DEFAULT_LIMIT };
  for (const name of FILTERS) if (params.get(name)) query[name] = params.get(name);
  const traces = useApi(apiUrl('traces', query));
  const sort = SORTS[params.get('sort')] ? params.get('sort') : 'newest';
  return html`<div class="search-layout">
    <aside class="filters"><${SearchForm} key=${route.key} params=${params} /></aside>
    <section class="results">
      <${Loaded} result=${traces} what="traces" ready="search">
        ${(t) => t.data.length === 0
          ? html`<${Empty}>No traces match these filters ${rangePhrase(range)}. Widen the time range or remove a filter.<//>`
          : html`<${Results} traces=${t.data} sort=${sort} range=${range} />`}
      <//>
    </section>
  </div>`;
}

/** Services that send spans, and the chosen one even when this window has none of its spans. */
export function serviceChoices(services, chosen) {
  const names = services.filter((s) => s.kind === 'service').map((s) => s.name);
  if (chosen && !names.includes(chosen)) names.unshift(chosen);
  return names;
}

function SearchForm({ params }) {
  const { range } = useContext(AppContext);
  const [form, setForm] = useState(() => {
    const initial = Object.fromEntries(FILTERS.map((name) => [name, params.get(name) ?? '']));
    initial.attributes = formatAttributes(params.getAll('attr'));
    return initial;
  });
  const [problem, setProblem] = useState(null);
  const services = useApi(apiUrl('services', rangeParams(range)));
  const operations = useApi(form.service ? apiUrl(`services/${encodeURIComponent(form.service)}/operations`, rangeParams(range)) : null);
  const set = (name) => (event) => {
    const target = event.currentTarget;
    setForm((f) => ({ ...f, [name]: target.type === 'checkbox' ? (target.checked ? 'true' : '') : target.value }));
  };
  const submit = (event) => {
    event.preventDefault();
    const { filters, invalid } = parseAttributes(form.attributes);
    if (invalid.length) {
      setProblem(`not an attribute filter: ${invalid.join(', ')} (write key=value, key>=number, key!="a b")`);
      return;
    }
    setProblem(null);
    const next = { attr: filters, sort: params.get('sort') };
    for (const name of FILTERS) next[name] = form[name].trim();
    navigate(href('/search', next));
  };
  const operationNames = [...new Set((operations.data?.data ?? []).map((o) => o.name))];
  return html`<form class="search-form" onSubmit=${submit}>
    <h1>Find traces</h1>
    <label>Service
      <select name="service" value=${form.service} onChange=${(e) => { set('service')(e); setForm((f) => ({ ...f, operation: '' })); }}>
        <option value="">Any</option>
        ${serviceChoices(services.data?.data ?? [], form.service).map((name) => html`<option value=${name}>${name}</option>`)}
      </select>
    </label>
    <label>Operation
      <input name="operation" list="operation-names" value=${form.operation} onInput=${set('operation')} placeholder="Any" />
      <datalist id="operation-names">${operationNames.map((name) => html`<option value=${name} />`)}</datalist>
    </label>
    <label>Attributes
      <input name="attributes" value=${form.attributes} onInput=${set('attributes')} placeholder='http.response.status_code>=500 region="us east"' />
    </label>
    <fieldset><legend>Span duration</legend>
      <input name="min_duration" value=${form.min_duration} onInput=${set('min_duration')} placeholder="min, e.g. 100ms" aria-label="Minimum span duration" />
      <input name="max_duration" value=${form.max_duration} onInput=${set('max_duration')} placeholder="max, e.g. 2s" aria-label="Maximum span duration" />
    </fieldset>
    <fieldset><legend>Trace duration</legend>
      <input name="min_trace_duration" value=${form.min_trace_duration} onInput=${set('min_trace_duration')} placeholder="min" aria-label="Minimum trace duration" />
      <input name="max_trace_duration" value=${form.max_trace_duration} onInput=${set('max_trace_duration')} placeholder="max" aria-label="Maximum trace duration" />
    </fieldset>
    <label class="check"><input type="checkbox" name="error" checked=${form.error === 'true'} onChange=${set('error')} /> Errors only</label>
    <label>Limit
      <select name="limit" value=${form.limit || DEFAULT_LIMIT} onChange=${set('limit')}>${['20', '50', '100', '500', '1000'].map((n) => html`<option value=${n}>${n}</option>`)}</select>
    </label>
    ${problem ? html`<p class="state error small" role="alert">${problem}</p>` : null}
    <button type="submit" class="primary">Find traces</button>
  </form>`;
}

function Results({ traces, sort, range }) {
  const sorted = [...traces].sort(SORTS[sort].compare);
  const longest = Math.max(...traces.map((t) => t.duration_nano));
  return html`<${Scatter} traces=${traces} range=${range} />
    <div class="results-head">
      <strong>${traces.length} trace${traces.length === 1 ? '' : 's'}</strong>
      <span class="spacer"></span>
      <select aria-label="Sort" value=${sort} onChange=${(e) => setParams({ sort: e.currentTarget.value }, { replace: true })}>
        ${Object.entries(SORTS).map(([value, s]) => html`<option value=${value}>${s.label}</option>`)}
      </select>
    </div>
    <ol class="trace-list">${sorted.map((t) => html`<li key=${t.trace_id} class=${t.error_count ? 'has-error' : ''}>
      <${Link} to=${href(`/trace/${t.trace_id}`)} class="trace-item">
        <div class="trace-title"><span><strong>${t.root_service}</strong>: ${t.root_operation}</span>
          <span class="spacer"></span><span class="duration">${formatNanos(t.duration_nano)}</span></div>
        <div class="duration-bar"><span style=${`width:${Math.max(0.5, (100 * t.duration_nano) / longest)}%`}></span></div>
        <div class="trace-meta">
          <span>${t.span_count} span${t.span_count === 1 ? '' : 's'}</span>
          ${t.error_count ? html`<span class="badge error">${t.error_count} error${t.error_count === 1 ? '' : 's'}</span>` : null}
          ${t.services.map((s) => html`<span class="service-chip" style=${`--chip:${serviceColor(s)}`}>${s}</span>`)}
          <span class="spacer"></span>
          <span class="muted" title=${new Date(t.start_unix_nano / 1e6).toISOString()}>${formatClock(t.start_unix_nano / 1e9, true)} · ${formatAgo(t.start_unix_nano / 1e9)}</span>
          <code class="muted">${t.trace_id.slice(0, 12)}</code>
        </div>
      <//>
    </li>`)}</ol>`;
}

const PLOT = { width: 1000, height: 200, left: 64, right: 16, top: 12, bottom: 28 };

function Scatter({ traces, range }) {
  const starts = traces.map((t) => t.start_unix_nano / 1e9);
  let t0 = Math.min(...starts);
  let t1 = Math.max(...starts);
  const pad = Math.max(1, (t1 - t0) * 0.05);
  t0 = Math.max(range.start, t0 - pad);
  t1 = Math.min(range.end, t1 + pad);
  if (t1 <= t0) t1 = t0 + 1;
  const maxMs = Math.max(...traces.map((t) => t.duration_nano / 1e6)) * 1.1 || 1;
  const x = (s) => PLOT.left + ((s - t0) / (t1 - t0)) * (PLOT.width - PLOT.left - PLOT.right);
  const y = (ms) => PLOT.height - PLOT.bottom - (ms / maxMs) * (PLOT.height - PLOT.top - PLOT.bottom);
  const yTicks = [0, 0.25, 0.5, 0.75, 1].map((f) => f * maxMs);
  const xTicks = [0, 0.25, 0.5, 0.75, 1].map((f) => t0 + f * (t1 - t0));
  return html`<svg class="scatter" viewBox="0 0 ${PLOT.width} ${PLOT.height}" role="img" aria-label="Trace duration over time">
    ${yTicks.map((v) => html`<g><line x1=${PLOT.left} x2=${PLOT.width - PLOT.right} y1=${y(v)} y2=${y(v)} class="grid" />
      <text x=${PLOT.left - 6} y=${y(v)} dy="0.35em" text-anchor="end" class="axis">${formatMs(v)}</text></g>`)}
    ${xTicks.map((v, k) => html`<text x=${x(v)} y=${PLOT.height - 8} text-anchor=${k === 0 ? 'start' : k === xTicks.length - 1 ? 'end' : 'middle'} class="axis">${formatClock(v, false, t1 - t0 < 20)}</text>`)}
    ${traces.map((t) => html`<circle key=${t.trace_id} class=${`dot${t.error_count ? ' error' : ''}`} data-trace=${t.trace_id}
        cx=${x(t.start_unix_nano / 1e9)} cy=${y(t.duration_nano / 1e6)} r=${Math.min(10, 3.5 + Math.log2(t.span_count))}
        onClick=${() => navigate(href(`/trace/${t.trace_id}`))}>
      <title>${t.root_service}: ${t.root_operation} — ${formatNanos(t.duration_nano)}, ${t.span_count} spans${t.error_count ? `, ${t.error_count} errors` : ''}</title>
    </circle>`)}
  </svg>`;
}
