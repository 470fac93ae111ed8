// Loading, empty and error states that say what happened.
import { html, useEffect } from './vendor/preact-htm.js';
import { markReady } from './route.js';

export function Loading({ what }) {
  return html`<div class="state loading" role="status"><span class="spinner"></span>Loading ${what}…</div>`;
}

export function Empty({ children }) {
  return html`<div class="state empty" role="status">${children}</div>`;
}

export function Failure({ what, error }) {
  const cause = error.status === 0
    ? error.message
    : error.status >= 500
      ? `the server failed (${error.status}): ${error.message}`
      : `the server refused the request (${error.status}): ${error.message}`;
  return html`<div class="state error" role="alert"><strong>Could not load ${what}:</strong> ${cause}</div>`;
}

/**
 * The usual ladder: an error, else loading (before any data), else the content. A thin bar shows
 * while newer data is on its way. With `ready`, the view is marked drawn (see `markReady`) once
 * fresh data is on screen; effects run children first, so charts are drawn by then.
 */
export function Loaded({ result, what, ready = null, children }) {
  const { data, error, loading, fresh } = result;
  useEffect(() => {
    if (ready && fresh) markReady(ready);
  });
  return html`${loading && data ? html`<div class="refreshing" aria-hidden="true"></div>` : null}
    ${error ? html`<${Failure} what=${what} error=${error} />` : null}
    ${data ? children(data) : !error ? html`<${Loading} what=${what} />` : null}`;
}
