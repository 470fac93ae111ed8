import { createContext } from './vendor/preact-htm.js';

/** What every view reads: the route, the resolved time range and the auto-refresh tick. */
export const AppContext = createContext({ route: null, range: null, tick: 0 });
