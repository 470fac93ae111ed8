// Time ranges, number formats and colours shared by the views.

export const PRESETS = [
  ['15m', 'Last 15 minutes'],
  ['1h', 'Last hour'],
  ['6h', 'Last 6 hours'],
  ['24h', 'Last 24 hours'],
];

const UNIT_SECONDS = { s: 1, m: 60, h: 3600, d: 86400 };

/** `now`, `now-15m`, an RFC 3339 time or unix seconds → unix seconds; null when unreadable. */
function parseTimeExpr(expr, nowSeconds) {
  if (expr === 'now') return nowSeconds;
  const relative = /^now-(\d+(?:\.\d+)?)([smhd])$/.exec(expr);
  if (relative) return nowSeconds - Number(relative[1]) * UNIT_SECONDS[relative[2]];
  if (/^\d+(\.\d+)?$/.test(expr)) return Number(expr);
  const ms = Date.parse(expr);
  return Number.isNaN(ms) ? null : ms / 1000;
}

/** The window of the URL's `from`/`to` (default: the last hour), resolved against now. */
export function resolveRange(params, nowMs = Date.now()) {
  const now = nowMs / 1000;
  const from = params.get('from') ?? 'now-1h';
  const to = params.get('to') ?? 'now';
  let start = parseTimeExpr(from, now);
  let end = parseTimeExpr(to, now);
  let problem = null;
  if (start === null || end === null || !(start < end)) {
    problem = `the time range "${from}" to "${to}" is not valid; showing the last hour`;
    start = now - 3600;
    end = now;
  }
  const preset = to === 'now' ? PRESETS.find(([p]) => from === `now-${p}`) : undefined;
  const label = preset ? preset[1] : `${formatClock(start, true)} – ${formatClock(end, true)}`;
  return { start: Math.floor(start), end: Math.ceil(end), from, to, label, relative: to === 'now', problem };
}

/** "in the last hour", "between Nov 22 10:00:00 and Nov 22 11:00:00". */
export function rangePhrase(range) {
  return range.relative && !range.problem ? `in the ${range.label.toLowerCase()}` : `in ${range.label}`;
}

/** The API's `start`/`end` parameters for a range. */
export function rangeParams(range) {
  return { start: range.start, end: range.end };
}

export function toIsoSeconds(unixSeconds) {
  return new Date(Math.round(unixSeconds) * 1000).toISOString().replace('.000Z', 'Z');
}

export function formatClock(unixSeconds, withDate = false, withMillis = false) {
  const d = new Date(unixSeconds * 1000);
  let time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
  if (withMillis) time += `.${String(d.getMilliseconds()).padStart(3, '0')}`;
  return withDate ? `${d.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${time}` : time;
}

export function formatAgo(unixSeconds, nowMs = Date.now()) {
  const s = Math.max(0, nowMs / 1000 - unixSeconds);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h ago`;
  return `${(s / 86400).toFixed(1)} d ago`;
}

/** Milliseconds as people read them: 850 µs, 12.3 ms, 1.25 s, 2.0 min. */
export function formatMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '–';
  if (ms === 0) return '0';
  if (ms < 1) return `${(ms * 1000).toFixed(ms < 0.01 ? 1 : 0)} µs`;
  if (ms < 10) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${ms.toFixed(ms < 100 ? 1 : 0)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(2)} s`;
  return `${(ms / 60000).toFixed(1)} min`;
}

export function formatNanos(nanos) {
  return formatMs(nanos / 1e6);
}

export function formatRate(perSecond) {
  if (perSecond === null || perSecond === undefined) return '–';
  if (perSecond === 0) return '0/s';
  if (perSecond < 0.01) return `${(perSecond * 60).toFixed(2)}/min`;
  if (perSecond < 10) return `${perSecond.toFixed(2)}/s`;
  if (perSecond < 1000) return `${perSecond.toFixed(1)}/s`;
  return `${(perSecond / 1000).toFixed(1)}k/s`;
}

export function formatPct(fraction) {
  if (fraction === null || fraction === undefined) return '–';
  const pct = fraction * 100;
  if (pct === 0) return '0%';
  if (pct < 0.1) return '<0.1%';
  return `${pct < 10 ? pct.toFixed(1) : pct.toFixed(0)}%`;
}

/** Error rate → colour: green when clean, through amber, to red at 5% and above. */
export function errorColor(fraction) {
  if (fraction === null || fraction === undefined) return '#9aa5b1';
  if (fraction <= 0) return '#2f9e68';
  if (fraction < 0.01) return '#9bbf3a';
  if (fraction < 0.05) return '#e0a020';
  return '#d64545';
}

const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#b07aa1', '#76b7b2', '#edc948', '#ff9da7', '#9c755f', '#2b8cbe', '#8f6ad1', '#3fa37a', '#c4663a'];

/** A stable colour per service name. */
export function serviceColor(name) {
  let hash = 2166136261;
  for (let i = 0; i < name.length; i++) hash = Math.imul(hash ^ name.charCodeAt(i), 16777619);
  return PALETTE[(hash >>> 0) % PALETTE.length];
}

export const SPAN_KINDS = ['server', 'client', 'producer', 'consumer', 'internal'];
