// Sightline's UI in Debian's headless Chromium against `sightline serve --demo`: every view
// shows real content, the map → service → trace search → trace path clicks through, deep links
// survive a reload, and the error and empty states say what happened.
//
//   SIGHTLINE_BIN=target/debug/sightline node ui/tests/browser.mjs
//
// Screenshots go to SIGHTLINE_SCREENSHOTS (when set); SIGHTLINE_WARMUP=600 lets the demo run ten
// minutes first, for screenshots with history. `cargo test --test ui_browser` runs this.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { launchBrowser, startSightline, waitForShop, sendWideTrace, waitForTrace, getJson, DEMO_NODES } from './harness.mjs';

const binary = process.env.SIGHTLINE_BIN ?? 'target/debug/sightline';
const shots = process.env.SIGHTLINE_SCREENSHOTS;
if (shots) mkdirSync(shots, { recursive: true });

const server = await startSightline(binary);
const browser = await launchBrowser().catch(async (error) => {
  await server.stop();
  throw error;
});
const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
const problems = [];
page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
page.on('console', (message) => {
  // The error-state steps provoke 4xx answers on purpose; the browser logs those as console errors.
  if (message.type() === 'error' && !/status of 4\d\d/.test(message.text())) problems.push(`console: ${message.text()}`);
});
const base = server.base;
const passed = [];

async function step(name, body) {
  const started = Date.now();
  try {
    await body();
  } catch (error) {
    if (shots) await page.screenshot({ path: join(shots, 'failure.png') }).catch(() => {});
    console.error(`FAILED: ${name}\n  at ${page.url()}`);
    throw error;
  }
  passed.push(name);
  console.log(`ok - ${name} (${Date.now() - started} ms)`);
}

async function shot(name) {
  if (shots) await page.screenshot({ path: join(shots, `${name}.png`) });
}

async function ready(view) {
  await page.waitForSelector(`html[data-ready="${view}"]`, { timeout: 15000 });
}

/** Pixels of the canvas in `selector` that are close to `rgb`: a drawn series, not just axes. */
async function seriesPixels(selector, rgb) {
  return page.$eval(selector, (figure, [r, g, b]) => {
    const canvas = figure.querySelector('canvas');
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let count = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (Math.abs(data[i] - r) < 30 && Math.abs(data[i + 1] - g) < 30 && Math.abs(data[i + 2] - b) < 30 && data[i + 3] > 200) count++;
    }
    return count;
  }, rgb);
}

/** "1.25 s", "250 ms", "850 µs", "–" → milliseconds (NaN for none). */
function parseMs(text) {
  const m = /^([\d.]+)\s*(µs|ms|s|min)?$/.exec(text.trim());
  if (!m) return NaN;
  return Number(m[1]) * { µs: 0.001, ms: 1, s: 1000, min: 60000, undefined: 1 }[m[2]];
}

function parsePct(text) {
  const t = text.trim();
  if (t === '<0.1%') return 0.05;
  return t === '–' ? NaN : Number(t.replace('%', ''));
}

function assertDescending(values, what) {
  for (let i = 1; i < values.length; i++) assert.ok(values[i] <= values[i - 1] + 1e-9, `${what} not descending at row ${i}: ${values}`);
}

let wide;
try {
  await step('the demo shop reaches the store', async () => {
    await waitForShop(base);
    // To take screenshots with a few minutes of history behind the charts.
    const warmup = Number(process.env.SIGHTLINE_WARMUP ?? 0);
    if (warmup > 0) await new Promise((r) => setTimeout(r, warmup * 1000));
  });

  await step('assets are embedded: the page loads, modules and styles come gzipped with an ETag', async () => {
    const response = await fetch(`${base}/assets/vendor/uplot.js`, { headers: { 'accept-encoding': 'gzip' } });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-encoding'), 'gzip');
    const etag = response.headers.get('etag');
    assert.ok(etag);
    const again = await fetch(`${base}/assets/vendor/uplot.js`, { headers: { 'if-none-match': etag } });
    assert.equal(again.status, 304);
    assert.equal((await fetch(`${base}/assets/nope.js`)).status, 404);
  });

  await step('front-end logic: critical path, trace tree, collapsing, filters, layout, time ranges', async () => {
    await page.goto(`${base}/map`);
    const results = await page.evaluate(async () => {
      const trace = await import('/assets/views/trace.js');
      const search = await import('/assets/views/search.js');
      const map = await import('/assets/views/map.js');
      const format = await import('/assets/format.js');
      const span = (id, parent, start, end, status = 'unset') => ({
        span_id: id, parent_span_id: parent, start_unix_nano: start, duration_nano: end - start, status_code: status,
      });
      // r: 0–100; a: 10–40; c: 20–60 (overlaps both); b: 50–90. The path is r, b, then a.
      const t = trace.buildTrace([span('r', null, 0, 100), span('a', 'r', 10, 40), span('b', 'r', 50, 90), span('c', 'r', 20, 60, 'error')]);
      const critical = ['r', 'a', 'b', 'c'].filter((id) => t.critical[t.index.get(id)]);
      // x and y are each other's parents: reached from no root, still shown.
      const cyclic = trace.buildTrace([span('x', 'y', 5, 6), span('y', 'x', 1, 9), span('z', null, 0, 10), span('w', 'z', 2, 3)]);
      const nested = trace.buildTrace([span('p', null, 0, 10), span('q', 'p', 1, 5), span('s', 'q', 2, 3), span('u', 'p', 6, 9)]);
      const collapsed = trace.visibleRows(nested, new Set([nested.index.get('q')])).map((i) => nested.spans[i].span_id);
      const layout = map.layout([{ id: 'a' }, { id: 'b' }, { id: 'c' }], [{ source: 'a', target: 'b' }, { source: 'b', target: 'a' }, { source: 'b', target: 'c' }]);
      const range = format.resolveRange(new URLSearchParams('from=now-15m'), 1_800_000_000_000);
      const bad = format.resolveRange(new URLSearchParams('from=yesterday'), 1_800_000_000_000);
      return {
        critical,
        errors: t.errors.map((i) => t.spans[i].span_id),
        cyclic: cyclic.order.map((i) => cyclic.spans[i].span_id),
        collapsed,
        attributes: search.parseAttributes('a=1 b>=2.5 c="x y" d!=z bogus'),
        formatted: search.formatAttributes(['c=x y', 'a=1']),
        placed: [...layout.positions.keys()].sort(),
        range: [range.end - range.start, range.label, range.problem],
        bad: bad.problem,
        ms: [format.formatMs(0.85), format.formatMs(12.34), format.formatMs(1250), format.formatMs(0)],
      };
    });
    assert.deepEqual(results.critical, ['r', 'a', 'b']);
    assert.deepEqual(results.errors, ['c']);
    assert.deepEqual(results.cyclic, ['z', 'w', 'x', 'y']);
    assert.deepEqual(results.collapsed, ['p', 'q', 'u']);
    assert.deepEqual(results.attributes, { filters: ['a=1', 'b>=2.5', 'c=x y', 'd!=z'], invalid: ['bogus'] });
    assert.equal(results.formatted, 'c="x y" a=1');
    assert.deepEqual(results.placed, ['a', 'b', 'c']);
    assert.deepEqual(results.range, [900, 'Last 15 minutes', null]);
    assert.match(results.bad, /not valid/);
    assert.deepEqual(results.ms, ['850 µs', '12.3 ms', '1.25 s', '0']);
  });

  await step('service map: every node and edge of the shop, sized and coloured, with labels', async () => {
    await page.goto(`${base}/?from=now-15m`);
    await ready('map');
    const nodes = await page.$$eval('[data-node]', (list) => list.map((n) => n.dataset.node).sort());
    assert.deepEqual(nodes, DEMO_NODES);
    const edges = await page.$$eval('[data-edge]', (list) => list.map((e) => e.dataset.edge));
    assert.ok(edges.includes('frontend>payments') && edges.includes('payments>stripe'), `edges: ${edges}`);
    const label = await page.textContent('[data-edge="frontend>payments"] .edge-label');
    assert.match(label, /\/(s|min) · .*% err · p99 [\d.]+ (ms|s|µs)/);
    const kinds = await page.$$eval('[data-node="postgresql"] rect, [data-node="orders"] polygon, [data-node="stripe"] circle.external', (l) => l.length);
    assert.equal(kinds, 3, 'databases, queues and external targets have their own shapes');
    // The demo began moments ago: the map's rates cover the seconds with data, and say so.
    const note = await page.textContent('.view-head .rate-note');
    assert.match(note, /rates over the \d+ (s|min) with data/);
    await shot('map');
  });

  await step('service map: wheel zooms around the pointer, dragging pans without selecting, Fit restores', async () => {
    const viewBox = () => page.$eval('svg.service-map', (svg) => svg.getAttribute('viewBox').split(' ').map(Number));
    const whole = await viewBox();
    const box = await (await page.$('svg.service-map')).boundingBox();
    const [cx, cy] = [box.x + box.width / 2, box.y + box.height / 2];
    await page.mouse.move(cx, cy);
    await page.mouse.wheel(0, -400);
    await page.waitForFunction((w) => Number(document.querySelector('svg.service-map').getAttribute('viewBox').split(' ')[2]) < w, whole[2]);
    const zoomed = await viewBox();
    assert.ok(zoomed[2] < whole[2] * 0.75, `zoomed in: ${zoomed} from ${whole}`);
    // The map point under the pointer stays under it.
    const under = (vb) => [vb[0] + (vb[2] * (cx - box.x)) / box.width, vb[1] + (vb[3] * (cy - box.y)) / box.height];
    under(zoomed).forEach((v, k) => assert.ok(Math.abs(v - under(whole)[k]) < 2, `zoom centre ${under(zoomed)} vs ${under(whole)}`));
    await page.mouse.down();
    await page.mouse.move(cx + 60, cy + 10, { steps: 4 });
    await page.mouse.move(cx + 120, cy + 20, { steps: 4 });
    await page.mouse.up();
    const panned = await viewBox();
    assert.ok(panned[0] < zoomed[0] - 10 && panned[2] === zoomed[2], `panned: ${panned} from ${zoomed}`);
    const params = new URL(page.url()).searchParams;
    assert.ok(!params.has('node') && !params.has('edge'), 'a drag selects nothing');
    await page.click('button[aria-label="Fit the map"]');
    assert.deepEqual(await viewBox(), whole);
  });

  await step('service map: an edge opens its RED series', async () => {
    await page.click('[data-edge="frontend>payments"] .edge-hit', { force: true });
    await page.waitForSelector('[data-testid="edge-panel"] [data-testid="chart-rate"] canvas');
    assert.match(page.url(), /edge=frontend%3Epayments/);
    assert.match(await page.textContent('[data-testid="edge-panel"] h2'), /frontend → payments/);
  });

  await step('service map → node panel → service dashboard', async () => {
    await page.click('[data-node="frontend"]');
    await page.waitForSelector('[data-testid="node-panel"] table.compact tbody tr');
    const operations = await page.$$eval('[data-testid="node-panel"] table.compact tbody tr', (rows) => rows.length);
    assert.ok(operations >= 5, `frontend shows ${operations} operations`);
    await page.click('[data-testid="node-panel"] a.button:text("Dashboard")');
    await ready('service');
    assert.equal(new URL(page.url()).pathname, '/service/frontend');
    await page.waitForSelector('[data-testid="chart-latency"] canvas');
    assert.ok(await seriesPixels('[data-testid="chart-rate"]', [78, 121, 167]) > 20, 'the rate series is drawn');
    assert.ok(await seriesPixels('[data-testid="chart-latency"]', [214, 69, 69]) > 5, 'the p99 series is drawn');
    const rows = await page.$$eval('table.data tbody tr', (r) => r.length);
    assert.ok(rows >= 5, `operations table has ${rows} rows`);
    await shot('dashboard');
  });

  await step('the dashboard of a database: the calls into it, and its callers', async () => {
    await page.goto(`${base}/map?from=now-15m&node=postgresql`);
    await page.click('[data-testid="node-panel"] a.button:text("Dashboard")');
    await ready('service');
    assert.equal(new URL(page.url()).pathname, '/service/postgresql');
    assert.ok(await seriesPixels('[data-testid="chart-rate"]', [78, 121, 167]) > 20, 'the rate series is drawn');
    const callers = await page.$$eval('table.data tbody tr td:first-child', (c) => c.map((td) => td.textContent).sort());
    assert.deepEqual(callers, ['cart', 'catalog', 'fulfillment', 'payments']);
    await page.goBack();
    await page.goBack();
    await ready('service');
    assert.equal(new URL(page.url()).pathname, '/service/frontend');
  });

  await step('dashboard: dragging across a chart zooms the time range', async () => {
    const over = await page.$('[data-testid="chart-rate"] .u-over');
    const box = await over.boundingBox();
    await page.mouse.move(box.x + box.width * 0.8, box.y + box.height / 2);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.99, box.y + box.height / 2, { steps: 8 });
    await page.mouse.up();
    await page.waitForFunction(() => /from=\d{4}-/.test(window.location.search));
    const params = new URL(page.url()).searchParams;
    const from = Date.parse(params.get('from'));
    const to = Date.parse(params.get('to'));
    assert.ok(to > from && to - from < 15 * 60 * 1000, `zoomed to ${params.get('from')} – ${params.get('to')}`);
    await ready('service');
  });

  await step('dashboard → trace search for the service: results, scatter, filters in the form', async () => {
    await page.click('.view-head a.button:text-is("Traces")');
    await ready('search');
    const url = new URL(page.url());
    assert.equal(url.pathname, '/search');
    assert.equal(url.searchParams.get('service'), 'frontend');
    assert.ok(url.searchParams.get('from'), 'the zoomed range is carried along');
    const items = await page.$$eval('.trace-list li', (l) => l.length);
    const dots = await page.$$eval('svg.scatter circle.dot', (l) => l.length);
    assert.ok(items > 0);
    assert.equal(dots, items, 'one dot per trace');
    const services = await page.$$eval('.trace-list li', (l) => l.map((li) => li.textContent));
    assert.ok(services.every((t) => t.includes('frontend')), 'every trace has a frontend span');
    assert.equal(await page.inputValue('select[name="service"]'), 'frontend');
    await shot('search');
  });

  await step('trace search → trace: a dot opens the waterfall with every span of the trace', async () => {
    // Dots may overlap: click the centre of the first one and expect the trace of whichever
    // dot is on top there.
    const box = await (await page.$('svg.scatter circle.dot')).boundingBox();
    const [x, y] = [box.x + box.width / 2, box.y + box.height / 2];
    const traceId = await page.evaluate(([px, py]) => document.elementFromPoint(px, py).dataset.trace, [x, y]);
    assert.ok(traceId, 'a dot is under the pointer');
    const answer = page.waitForResponse((r) => r.url().endsWith(`/api/v1/traces/${traceId}`));
    await page.mouse.click(x, y);
    const stored = await (await answer).json();
    await ready('trace');
    assert.equal(new URL(page.url()).pathname, `/trace/${traceId}`);
    const rows = await page.$$eval('.span-row', (r) => r.length);
    assert.equal(rows, stored.spans.length, 'one row per span');
    assert.equal(await page.textContent('[data-testid="span-count"]'), String(stored.spans.length));
    assert.ok(await page.$$eval('.span-row.critical', (r) => r.length) >= 1, 'the critical path is marked');
    await page.click('.span-row >> nth=0');
    await page.waitForSelector('[data-testid="span-details"]');
    assert.match(await page.textContent('[data-testid="span-details"]'), /Attributes[\s\S]*Resource[\s\S]*service\.name/);
  });

  await step('a checkout trace: errors highlighted, span details, collapsible subtrees', async () => {
    const found = await getJson(`${base}/api/v1/traces?operation=POST%20/checkout&limit=50&start=${Math.floor(Date.now() / 1000) - 900}`);
    assert.ok(found.data.length > 0, 'the demo has checkouts');
    const checkout = found.data.find((t) => t.error_count > 0) ?? found.data[0];
    // The waterfall must show exactly what the server answered the page (spans of a young trace
    // may still be arriving).
    const answer = page.waitForResponse((r) => r.url().endsWith(`/api/v1/traces/${checkout.trace_id}`));
    await page.goto(`${base}/trace/${checkout.trace_id}`);
    const { spans } = await (await answer).json();
    await ready('trace');
    assert.equal(await page.$$eval('.span-row', (r) => r.length), spans.length);
    assert.equal(await page.$$eval('.span-row.error', (r) => r.length), spans.filter((sp) => sp.status_code === 'error').length);
    const errorNames = await page.$$eval('.span-row.error .operation', (r) => r.map((e) => e.textContent));
    assert.deepEqual(errorNames.sort(), spans.filter((sp) => sp.status_code === 'error').map((sp) => sp.name).sort());
    const before = await page.$$eval('.span-row', (r) => r.length);
    await page.click('.span-row >> nth=0 >> button.toggle');
    assert.equal(await page.$$eval('.span-row', (r) => r.length), 1, 'collapsing the root hides its subtree');
    await page.click('.span-row >> nth=0 >> button.toggle');
    assert.equal(await page.$$eval('.span-row', (r) => r.length), before);
    const payment = await page.$('.span-row:has-text("POST /charge")');
    if (payment) await payment.click();
    await shot('trace');
  });

  await step('top-N: rows sorted by p99, re-sorted by error rate, sparklines, filters', async () => {
    await page.goto(`${base}/top?from=now-15m`);
    await ready('top');
    const rows = await page.$$eval('.top-table tbody tr', (r) => r.length);
    assert.ok(rows >= 10, `${rows} operations`);
    const p99 = await page.$$eval('.top-table tbody tr td:nth-child(8)', (c) => c.map((td) => td.textContent));
    assertDescending(p99.map(parseMs), 'p99');
    await page.waitForFunction((n) => document.querySelectorAll('.top-table svg.sparkline').length === n, rows);
    await shot('top');
    await page.click('th.sortable button:text("Error rate")');
    await page.waitForFunction(() => new URLSearchParams(window.location.search).get('by') === 'error_rate');
    await ready('top');
    await page.waitForSelector('th.sorted button:text("Error rate")');
    const errors = await page.$$eval('.top-table tbody tr td:nth-child(5)', (c) => c.map((td) => td.textContent));
    assertDescending(errors.map(parsePct), 'error rate');
    await page.selectOption('select[aria-label="Service"]', 'payments');
    await page.waitForFunction(() => new URLSearchParams(window.location.search).get('service') === 'payments');
    await page.waitForFunction(() => [...document.querySelectorAll('.top-table tbody tr td:first-child')].every((td) => td.textContent === 'payments'));
    await page.selectOption('select[aria-label="Span kind"]', 'client');
    await page.waitForFunction(() => [...document.querySelectorAll('.top-table tbody tr td:nth-child(3)')].every((td) => td.textContent === 'client'));
  });

  await step('a 10,000-span trace is sent over OTLP/HTTP JSON and stored whole', async () => {
    wide = await sendWideTrace(server.otlpHttp);
    assert.equal(wide.count, 10000);
    await waitForTrace(base, wide.traceId, wide.count);
  });

  await step('a 10,000-span trace: virtualised rows, scroll to the end, collapse, next error', async () => {
    await page.goto(`${base}/trace/${wide.traceId}`);
    await ready('trace');
    assert.equal(await page.textContent('[data-testid="span-count"]'), '10000');
    assert.equal(await page.getAttribute('[data-testid="waterfall"]', 'data-rows'), '10000');
    const drawn = await page.$$eval('.span-row', (r) => r.length);
    assert.ok(drawn < 120, `only the visible rows are in the page (${drawn})`);
    await page.$eval('[data-testid="waterfall"]', (w) => { w.scrollTop = w.scrollHeight; });
    const last = wide.order[wide.order.length - 1];
    await page.waitForSelector(`.span-row[data-span="${last}"]`);
    assert.ok(await page.$$eval('.span-row', (r) => r.length) < 120);
    await page.click('button:text("Collapse all")');
    await page.waitForFunction(() => document.querySelector('[data-testid="waterfall"]').dataset.rows === '1');
    await page.click('.span-row >> nth=0 >> button.toggle');
    await page.waitForFunction(() => document.querySelector('[data-testid="waterfall"]').dataset.rows === '100');
    await page.click('button:text("Next error")');
    await page.waitForSelector('[data-testid="span-details"] .state.error');
    assert.match(await page.textContent('[data-testid="span-details"]'), /failure 97/);
    // The details can render a frame before the waterfall has scrolled the row into view.
    await page.waitForSelector('.span-row.selected.error', { timeout: 5000 });
    assert.equal(await page.$$eval('.span-row.selected.error', (r) => r.length), 1, 'the error span is selected and visible');
    await shot('trace-10k');
  });

  await step('the waterfall by keyboard: move, step in and out, collapse and expand, Home, End, Escape', async () => {
    const { order } = wide;
    const selectedIs = (span) => page.waitForSelector(`.span-row.selected[data-span="${span}"]`);
    const rowsAre = (n) => page.waitForFunction((want) => document.querySelector('[data-testid="waterfall"]').dataset.rows === want, String(n));
    assert.equal(await page.$('select[aria-label="Time range"]'), null, 'a trace has no time range to pick');
    await page.focus('[data-testid="waterfall"]');
    await page.keyboard.press('Home');
    await selectedIs(order[0]);
    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('ArrowDown');
    await selectedIs(order[2]);
    await page.keyboard.press('ArrowLeft'); // a leaf: out to its parent
    await selectedIs(order[1]);
    await page.keyboard.press('ArrowLeft'); // an open subtree: collapse it
    await rowsAre(10000 - 100);
    await page.keyboard.press('ArrowDown'); // over the hidden subtree to the next sibling
    await selectedIs(order[102]);
    await page.keyboard.press('ArrowUp');
    await page.keyboard.press('ArrowRight'); // a collapsed subtree: expand it
    await rowsAre(10000);
    await page.keyboard.press('ArrowRight'); // an open subtree: into its first child
    await selectedIs(order[2]);
    await page.keyboard.press('End');
    await selectedIs(order[order.length - 1]);
    assert.equal(new URL(page.url()).searchParams.get('span'), order[order.length - 1]);
    await page.keyboard.press('Escape');
    await page.waitForSelector('[data-testid="span-details"]', { state: 'detached' });
  });

  await step('deep links survive a reload: a selected span, search filters, the time range', async () => {
    const span = wide.order[5000];
    await page.goto(`${base}/trace/${wide.traceId}?span=${span}`);
    await ready('trace');
    await page.reload();
    await ready('trace');
    await page.waitForSelector(`.span-row.selected[data-span="${span}"]`);
    assert.match(await page.textContent('[data-testid="span-details"] h2'), /record 49\.49/);

    await page.goto(`${base}/search?service=cart&operation=GET%20%2Fcart&from=now-6h&attr=http.response.status_code%3E%3D200`);
    await ready('search');
    await page.reload();
    await ready('search');
    assert.equal(await page.inputValue('select[name="service"]'), 'cart');
    assert.equal(await page.inputValue('input[name="operation"]'), 'GET /cart');
    assert.equal(await page.inputValue('input[name="attributes"]'), 'http.response.status_code>=200');
    assert.equal(await page.inputValue('select[aria-label="Time range"]'), '6h');
    const items = await page.$$eval('.trace-list li', (l) => l.map((li) => li.textContent));
    assert.ok(items.length > 0 && items.every((t) => t.includes('cart')));
  });

  await step('metrics: a PromQL table and graph of an OTLP counter, its exemplars lead to a trace', async () => {
    const found = await getJson(`${base}/api/v1/traces?service=frontend&limit=1&start=${Math.floor(Date.now() / 1000) - 900}`);
    const traceId = found.data[0].trace_id;
    const now = Date.now();
    const points = Array.from({ length: 10 }, (_, i) => ({
      attributes: [{ key: 'route', value: { stringValue: '/pay' } }, { key: 'app', value: { stringValue: 'shop' } }],
      startTimeUnixNano: String((now - 330000) * 1e6),
      timeUnixNano: String((now - 300000 + i * 30000) * 1e6),
      asDouble: 100 + i * 60,
      exemplars: [{ asDouble: 1, timeUnixNano: String((now - 300000 + i * 30000 - 1000) * 1e6), traceId, spanId: '0102030405060708' }],
    }));
    const body = { resourceMetrics: [{ resource: { attributes: [{ key: 'service.name', value: { stringValue: 'checkout' } }] },
      scopeMetrics: [{ metrics: [{ name: 'shop.checkouts', unit: '1', sum: { aggregationTemporality: 2, isMonotonic: true, dataPoints: points } }] }] }] };
    const sent = await fetch(`${server.otlpHttp}/v1/metrics`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    assert.equal(sent.status, 200, await sent.text());
    await page.goto(`${base}/explore?from=now-15m&q=${encodeURIComponent('rate(shop_checkouts_total[2m])')}`);
    await ready('explore');
    const rows = await page.$$eval('.promql-table tbody tr', (list) => list.map((r) => r.textContent));
    assert.equal(rows.length, 1, `rows: ${rows}`);
    assert.match(rows[0], /route="\/pay"/);
    assert.match(rows[0], /\b2\b/, 'rises 60 every 30 s: 2/s');
    await page.waitForSelector('[data-testid="label-hint"]');
    assert.match(await page.textContent('[data-testid="label-hint"]'), /route/);
    // Inside the braces the editor offers the metric's label names, then one label's values.
    const completions = () => page.$$eval('[data-testid="promql-completions"] option', (l) => l.map((o) => o.value));
    await page.fill('.promql-input', 'shop_checkouts_total{');
    await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="promql-completions"] option')].some((o) => o.value === 'shop_checkouts_total{route='));
    assert.ok((await completions()).includes('shop_checkouts_total{app='), `${await completions()}`);
    await page.fill('.promql-input', 'shop_checkouts_total{route="');
    await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="promql-completions"] option')].some((o) => o.value === 'shop_checkouts_total{route="/pay"'));
    assert.deepEqual(await completions(), ['shop_checkouts_total{route="/pay"']);
    assert.equal(await page.$('[data-testid="promql-notes"]'), null, 'a counter gets no annotation');
    // Prometheus's annotations show above the answer.
    await page.goto(`${base}/explore?from=now-15m&q=${encodeURIComponent('histogram_quantile(2, rate(shop_checkouts_total[2m]))')}`);
    await ready('explore');
    await page.waitForSelector('[data-testid="promql-notes"] li.warning');
    assert.match(await page.textContent('[data-testid="promql-notes"]'), /quantile value should be between 0 and 1, got 2/);
    await page.goto(`${base}/explore?from=now-15m&q=${encodeURIComponent('rate(shop_checkouts_total[2m])')}`);
    await ready('explore');
    await page.click('.tabs button:text("Graph")');
    await page.waitForFunction(() => new URLSearchParams(window.location.search).get('tab') === 'graph');
    await ready('explore');
    await page.waitForSelector('[data-testid="promql-graph"] canvas');
    assert.match(await page.textContent('[data-testid="promql-graph"] .u-legend'), /route="\/pay"/);
    await page.waitForSelector('[data-testid="exemplars"] a');
    // The exemplars are drawn on the graph too, at their time and value, each a link to its trace.
    await page.waitForSelector('[data-testid="promql-graph"] .chart-mark');
    assert.equal((await page.$$('[data-testid="promql-graph"] .chart-mark')).length, 10);
    await shot('metrics');
    await page.click('[data-testid="promql-graph"] .chart-mark');
    await page.waitForFunction((id) => window.location.pathname === `/trace/${id}`, traceId);
    await ready('trace');
    await page.goBack();
    await ready('explore');
    await page.click('[data-testid="exemplars"] a');
    await page.waitForFunction((id) => window.location.pathname === `/trace/${id}`, traceId);
    await ready('trace');
    // The same counter in the application view SOFALookout users know: by its `app` label.
    await page.goto(`${base}/apps?from=now-15m`);
    await ready('apps');
    await page.click('.app-list a:text("shop")');
    await ready('apps');
    assert.match(await page.textContent('[data-metric="shop_checkouts_total"]'), /route="\/pay"/);
    await shot('apps');
  });

  await step('error and empty states say what happened', async () => {
    await page.goto(`${base}/trace/00000000000000000000000000000001`);
    await page.waitForSelector('.state.empty');
    assert.match(await page.textContent('.state.empty'), /No trace .*00000000000000000000000000000001.* is stored/);
    await page.goto(`${base}/search?min_duration=soon`);
    await page.waitForSelector('.state.error');
    assert.match(await page.textContent('.state.error'), /refused the request \(400\).*min_duration/);
    await page.goto(`${base}/search?service=no-such-service`);
    await page.waitForSelector('.state.empty');
    assert.match(await page.textContent('.state.empty'), /No traces match/);
    await page.goto(`${base}/top?service=no-such-service`);
    await page.waitForSelector('.state.empty');
    const missing = await page.goto(`${base}/nowhere`);
    assert.equal(missing.status(), 404);
    await page.waitForSelector('main .state.error');
    assert.match(await page.textContent('main .state.error'), /There is no page at \/nowhere/);
    const api = await fetch(`${base}/api/v1/nowhere`);
    assert.equal(api.status, 404);
    assert.deepEqual(await api.json(), { error: 'no such path: /api/v1/nowhere' });
  });

  await step('the traffic picker shows load-test traffic apart, in every view it links to', async () => {
    await page.goto(`${base}/map`);
    await ready('map');
    const asked = page.waitForRequest((r) => r.url().includes('/api/v1/topology') && r.url().includes('load_test=true'));
    await page.selectOption('select[aria-label="Traffic"]', 'load-test');
    await page.waitForFunction(() => new URLSearchParams(window.location.search).get('traffic') === 'load-test');
    await asked;
    // The demo shop sends no load-test requests.
    await page.waitForSelector('.state.empty');
    assert.match(await page.textContent('.state.empty'), /No calls in/);
    const top = page.waitForRequest((r) => r.url().includes('/api/v1/top?') && r.url().includes('load_test=true'));
    await page.click('nav a:has-text("Top operations")');
    await top;
    assert.equal(new URL(page.url()).searchParams.get('traffic'), 'load-test', 'navigation keeps the traffic');
    await page.selectOption('select[aria-label="Traffic"]', 'regular');
    await page.waitForFunction(() => !new URLSearchParams(window.location.search).has('traffic'));
    await ready('top');
  });

  await step('time range picker and auto-refresh drive the URL and refetch', async () => {
    await page.goto(`${base}/map`);
    await ready('map');
    await page.selectOption('select[aria-label="Time range"]', '6h');
    await page.waitForFunction(() => new URLSearchParams(window.location.search).get('from') === 'now-6h');
    await ready('map');
    const refetched = page.waitForRequest((r) => r.url().includes('/api/v1/topology'), { timeout: 15000 });
    await page.selectOption('select[aria-label="Auto-refresh"]', '5s');
    await page.waitForFunction(() => new URLSearchParams(window.location.search).get('refresh') === '5s');
    await refetched;
    await page.selectOption('select[aria-label="Time range"]', 'custom');
    await page.fill('input[aria-label="From"]', '2026-01-01T10:00');
    await page.fill('input[aria-label="To"]', '2026-01-01T11:00');
    await page.click('.custom-range button[type="submit"]');
    await page.waitForFunction(() => /^2026-01-01T/.test(new URLSearchParams(window.location.search).get('from') ?? ''));
    await page.waitForSelector('.state.empty');
    assert.match(await page.textContent('.state.empty'), /No calls in/);
  });

  assert.deepEqual(problems, [], 'no script errors in the page');
  console.log(`${passed.length} browser checks passed`);
} finally {
  await browser.close();
  await server.stop();
}
