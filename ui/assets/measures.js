// How a measured thing — a node, an edge, an operation (see the API's summaries) — reads in the
// views: one line of text, or the table cells rate, error rate, p50, p95, p99.
import { html } from './vendor/preact-htm.js';
import { formatRate, formatPct, formatMs, errorColor } from './format.js';

/** "0.27/s · 0.8% err · p99 4.64 ms" */
export function callSummary(item) {
  return `${formatRate(item.rate)} · ${formatPct(item.error_rate)} err · p99 ${formatMs(item.p99_ms)}`;
}

/** Colour of an error rate where there were errors; none where there were not. */
export function errorStyle(item) {
  return item.errors > 0 ? `color:${errorColor(item.error_rate)}` : '';
}

/**
 * Says when rates cover less than the range: right after start-up "the last hour" holds a few
 * minutes of data, and the server divides by those (`rate_seconds`), not by the hour.
 */
export function RateNote({ seconds, range }) {
  const span = range.end - range.start;
  if (!(seconds > 0) || seconds >= span * 0.99) return null;
  const covered = seconds < 120 ? `${Math.round(seconds)} s` : `${Math.round(seconds / 60)} min`;
  return html`<span class="muted rate-note" title="Rates divide by the part of the range that has data">· rates over the ${covered} with data</span>`;
}

export function MeasureCells({ item }) {
  return html`<td class="num">${formatRate(item.rate)}</td>
    <td class="num" style=${errorStyle(item)}>${formatPct(item.error_rate)}</td>
    <td class="num">${formatMs(item.p50_ms)}</td><td class="num">${formatMs(item.p95_ms)}</td><td class="num">${formatMs(item.p99_ms)}</td>`;
}
