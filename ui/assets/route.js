// The URL is the state: the path names the view, the query string holds the time range, refresh
// and the view's filters, so every screen is a deep link that survives a reload.
import { html, useState, useEffect } from './vendor/preact-htm.js';

/** Parameters every view shares; links and navigation carry them along. */
const GLOBAL_PARAMS = ['from', 'to', 'refresh', 'traffic'];

const listeners = new Set();
let navigations = 0;

export function parseLocation(loc = window.location) {
  const parts = loc.pathname.split('/').filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(loc.search);
  const [first = 'map', arg = null] = parts;
  const view = { map: 'map', top: 'top', service: 'service', search: 'search', trace: 'trace', explore: 'explore', apps: 'apps' }[first] ?? 'notfound';
  return { view, arg, params, key: loc.pathname + loc.search };
}

/** Builds a URL for `path` with `params`, keeping the global parameters of the current URL. */
export function href(path, params = {}) {
  const current = new URLSearchParams(window.location.search);
  const kept = new URLSearchParams();
  for (const name of GLOBAL_PARAMS) if (current.has(name)) kept.set(name, current.get(name));
  return withParams(path, kept, params);
}

/**
 * `path` with the query `base` changed by `changes`: each named parameter is replaced, by every
 * element of an array, or removed when the value is null, undefined, '' or false.
 */
export function withParams(path, base, changes) {
  const params = new URLSearchParams(base);
  for (const [name, value] of Object.entries(changes)) {
    params.delete(name);
    if (value === null || value === undefined || value === '' || value === false) continue;
    if (Array.isArray(value)) value.forEach((v) => params.append(name, v));
    else params.set(name, String(value));
  }
  const query = params.toString();
  return path + (query ? `?${query}` : '');
}

export function navigate(url, { replace = false } = {}) {
  if (url === window.location.pathname + window.location.search) return;
  window.history[replace ? 'replaceState' : 'pushState'](null, '', url);
  changed();
}

/** Changes some query parameters of the current view (`null` removes one). */
export function setParams(changes, { replace = false } = {}) {
  navigate(withParams(window.location.pathname, window.location.search, changes), { replace });
}

function changed() {
  navigations += 1;
  delete document.documentElement.dataset.ready;
  listeners.forEach((listener) => listener(parseLocation()));
}
window.addEventListener('popstate', changed);

export function useRoute() {
  const [route, setRoute] = useState(parseLocation);
  useEffect(() => {
    listeners.add(setRoute);
    return () => listeners.delete(setRoute);
  }, []);
  return route;
}

/**
 * Marks the view as drawn with real content: `data-ready` on <html> for tests, and a
 * performance mark `ready:VIEW` (once per navigation) for the first-meaningful-paint benchmark.
 */
export function markReady(view) {
  const root = document.documentElement;
  if (root.dataset.ready === view && root.dataset.readyNav === String(navigations)) return;
  root.dataset.ready = view;
  root.dataset.readyNav = String(navigations);
  performance.mark(`ready:${view}`, { detail: { navigation: navigations } });
}

/** An <a> that navigates inside the app, but still opens a new tab on a modified click. */
export function Link({ to, children, class: className, title, ...rest }) {
  const onClick = (event) => {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    navigate(to);
  };
  return html`<a href=${to} class=${className} title=${title} onClick=${onClick} ...${rest}>${children}</a>`;
}
