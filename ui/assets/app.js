// The shell: navigation, the global time range and auto-refresh, and the current view.
import { html, render, useState, useEffect, useMemo } from './vendor/preact-htm.js';
import { AppContext } from './context.js';
import { useRoute, Link, href, navigate, setParams } from './route.js';
import { PRESETS, resolveRange, toIsoSeconds } from './format.js';
import { MapView } from './views/map.js';
import { TopView } from './views/top.js';
import { DashboardView } from './views/dashboard.js';
import { SearchView } from './views/search.js';
import { TraceView } from './views/trace.js';
import { ExploreView, AppsView } from './views/explore.js';

const VIEWS = { map: MapView, top: TopView, service: DashboardView, search: SearchView, trace: TraceView, explore: ExploreView, apps: AppsView };
const REFRESH = [['off', 'Off'], ['5s', '5 s'], ['10s', '10 s'], ['30s', '30 s'], ['1m', '1 min'], ['5m', '5 min']];
const REFRESH_MS = { '5s': 5000, '10s': 10000, '30s': 30000, '1m': 60000, '5m': 300000 };

function App() {
  const route = useRoute();
  const [tick, setTick] = useState(0);
  const refresh = route.params.get('refresh') ?? 'off';
  useEffect(() => {
    const every = REFRESH_MS[refresh];
    if (!every) return undefined;
    const timer = setInterval(() => setTick((t) => t + 1), every);
    return () => clearInterval(timer);
  }, [refresh]);
  const from = route.params.get('from');
  const to = route.params.get('to');
  // Resolved again on every tick and on every change of view, so that "last hour" moves with the
  // clock; not when a view changes its own parameters (a selected node, a sort order), which
  // would refetch its data for nothing.
  const range = useMemo(() => resolveRange(route.params), [from, to, tick, route.view, route.arg]);
  const View = VIEWS[route.view];
  const titles = { map: 'Service map', top: 'Top operations', service: route.arg, search: 'Trace search', trace: 'Trace', explore: 'Metrics', apps: route.arg ?? 'Applications' };
  useEffect(() => {
    document.title = `${titles[route.view] ?? 'Not found'} · Sightline`;
  }, [route.key]);

  return html`<${AppContext.Provider} value=${{ route, range, tick, refresh: () => setTick((t) => t + 1) }}>
    <header class="topbar">
      <${Link} to=${href('/map')} class="brand"><img src="/assets/favicon.svg" alt="" width="22" height="22" /> Sightline<//>
      <nav>
        <${NavLink} to="/map" active=${route.view === 'map' || route.view === 'service'}>Service map<//>
        <${NavLink} to="/top" active=${route.view === 'top'}>Top operations<//>
        <${NavLink} to="/search" active=${route.view === 'search' || route.view === 'trace'}>Traces<//>
        <${NavLink} to="/explore" active=${route.view === 'explore'}>Metrics<//>
        <${NavLink} to="/apps" active=${route.view === 'apps'}>Apps<//>
      </nav>
      <${TraceJump} />
      <div class="spacer"></div>
      ${route.view === 'trace' ? null : html`<${TrafficPicker} traffic=${route.params.get('traffic')} />`}
      ${route.view === 'trace' ? null : html`<${TimePicker} range=${range} />`}
      <${RefreshPicker} refresh=${refresh} onNow=${() => setTick((t) => t + 1)} />
    </header>
    ${range.problem ? html`<div class="state error banner" role="alert">${range.problem}</div>` : null}
    <main class=${`view view-${route.view}`}>
      ${View ? html`<${View} key=${route.view + (route.arg ?? '')} />` : html`<div class="state error">There is no page at ${window.location.pathname}. <${Link} to=${href('/map')}>Open the service map<//>.</div>`}
    </main>
  <//>`;
}

function NavLink({ to, active, children }) {
  return html`<${Link} to=${href(to)} class=${active ? 'active' : ''}>${children}<//>`;
}

function TraceJump() {
  const [id, setId] = useState('');
  const [problem, setProblem] = useState(null);
  const submit = (event) => {
    event.preventDefault();
    const clean = id.trim().toLowerCase();
    if (!/^[0-9a-f]{1,32}$/.test(clean)) {
      setProblem('a trace id is up to 32 hex digits');
      return;
    }
    setProblem(null);
    setId('');
    navigate(href(`/trace/${clean}`));
  };
  return html`<form class="trace-jump" onSubmit=${submit}>
    <input type="search" placeholder="Trace id" aria-label="Open trace by id" value=${id}
      onInput=${(e) => setId(e.currentTarget.value)} title=${problem ?? 'Open a trace by its id'} class=${problem ? 'invalid' : ''} />
  </form>`;
}

function toLocalInput(unixSeconds) {
  const d = new Date(unixSeconds * 1000);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function TimePicker({ range }) {
  const [custom, setCustom] = useState(false);
  const [start, setStart] = useState('');
  const [end, setEnd] = useState('');
  const preset = range.relative ? range.from.replace(/^now-/, '') : 'custom';
  const known = PRESETS.some(([p]) => p === preset);
  const choose = (value) => {
    if (value === 'custom') {
      setStart(toLocalInput(range.start));
      setEnd(toLocalInput(range.end));
      setCustom(true);
      return;
    }
    setCustom(false);
    setParams({ from: `now-${value}`, to: null });
  };
  const apply = (event) => {
    event.preventDefault();
    const s = Date.parse(start);
    const e = Date.parse(end);
    if (Number.isNaN(s) || Number.isNaN(e) || s >= e) return;
    setCustom(false);
    setParams({ from: toIsoSeconds(s / 1000), to: toIsoSeconds(e / 1000) });
  };
  return html`<div class="time-picker">
    <select aria-label="Time range" value=${custom || !known ? 'custom' : preset} onChange=${(e) => choose(e.currentTarget.value)}>
      ${PRESETS.map(([value, label]) => html`<option value=${value}>${label}</option>`)}
      <option value="custom">${!known && !custom ? range.label : 'Custom…'}</option>
    </select>
    ${custom ? html`<form class="custom-range" onSubmit=${apply}>
      <input type="datetime-local" aria-label="From" value=${start} onInput=${(e) => setStart(e.currentTarget.value)} />
      <span>to</span>
      <input type="datetime-local" aria-label="To" value=${end} onInput=${(e) => setEnd(e.currentTarget.value)} />
      <button type="submit">Apply</button>
      <button type="button" class="link" onClick=${() => setCustom(false)}>Cancel</button>
    </form>` : null}
  </div>`;
}

/** Regular traffic, or the load-test (shadow) requests SOFATracer marks, which the figures
 * leave out unless asked for. */
function TrafficPicker({ traffic }) {
  return html`<select class="traffic-picker" aria-label="Traffic" value=${traffic === 'load-test' ? 'load-test' : 'regular'}
    onChange=${(e) => setParams({ traffic: e.currentTarget.value === 'load-test' ? 'load-test' : null })}>
    <option value="regular">Regular traffic</option>
    <option value="load-test">Load-test traffic</option>
  </select>`;
}

function RefreshPicker({ refresh, onNow }) {
  return html`<div class="refresh-picker">
    <button type="button" title="Refresh now" aria-label="Refresh now" onClick=${onNow}>⟳</button>
    <select aria-label="Auto-refresh" value=${refresh} onChange=${(e) => setParams({ refresh: e.currentTarget.value === 'off' ? null : e.currentTarget.value })}>
      ${REFRESH.map(([value, label]) => html`<option value=${value}>${value === 'off' ? 'Auto-refresh off' : `Every ${label}`}</option>`)}
    </select>
  </div>`;
}

const root = document.getElementById('app');
root.textContent = '';
render(html`<${App} />`, root);
