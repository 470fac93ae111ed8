// The query API (docs/api.md) as the views use it: JSON in, a clear error out, and a hook that
// refetches when its URL or the refresh tick changes while keeping what it showed before.
import { useState, useEffect, useRef, useContext } from './vendor/preact-htm.js';
import { AppContext } from './context.js';
import { withParams } from './route.js';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Endpoints that answer either regular or load-test traffic (`load_test`, docs/api.md). */
const TRAFFIC_PATHS = /^(topology|top|red|services(\/.*)?|traces)$/;

/** The traffic the page shows: `traffic=load-test` in its URL, else regular traffic. */
export function showsLoadTest() {
  return new URLSearchParams(window.location.search).get('traffic') === 'load-test';
}

export function apiUrl(path, params = {}) {
  const traffic = TRAFFIC_PATHS.test(path) ? { load_test: String(showsLoadTest()) } : {};
  return withParams(`/api/v1/${path}`, '', { ...params, ...traffic });
}

async function getJson(url, signal) {
  let response;
  try {
    response = await fetch(url, { signal, headers: { accept: 'application/json' } });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, `cannot reach Sightline (${error.message}); is the server running?`);
  }
  const text = await response.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    // Reported below with the status.
  }
  if (!response.ok) {
    const message = body?.error ?? (text.trim().slice(0, 300) || response.statusText);
    throw new ApiError(response.status, message);
  }
  if (body === null) throw new ApiError(response.status, 'the server answered with something that is not JSON');
  return body;
}

/**
 * Fetches `url` (null: nothing to fetch). `refresh: true` refetches on every auto-refresh tick.
 * Returns { data, error, loading }: data is kept while a newer answer is on its way.
 */
export function useApi(url, { refresh = true } = {}) {
  const { tick } = useContext(AppContext);
  const [state, setState] = useState({ data: null, error: null, loading: url !== null, url: null });
  const latest = useRef(0);
  const key = refresh ? `${url}#${tick}` : url;
  useEffect(() => {
    if (url === null) {
      setState({ data: null, error: null, loading: false, url });
      return undefined;
    }
    const id = ++latest.current;
    const controller = new AbortController();
    setState((s) => ({ ...s, loading: true }));
    getJson(url, controller.signal).then(
      (data) => id === latest.current && setState({ data, error: null, loading: false, url }),
      (error) => {
        if (error.name === 'AbortError' || id !== latest.current) return;
        setState((s) => ({ data: s.data, error, loading: false, url }));
      },
    );
    return () => controller.abort();
  }, [key]);
  // Fresh: the data answers the URL asked for now, not an earlier one still on show.
  return { ...state, fresh: !state.loading && state.url === url && state.data !== null };
}
