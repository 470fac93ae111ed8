// The UI benchmark: time to first meaningful paint of each view on the demo shop's data, and
// frame times while scrolling a 10,000-span trace, in Debian's headless Chromium.
//
//   cargo build --release && node ui/tests/bench.mjs
//
// "Meaningful paint" is the `ready:VIEW` performance mark the UI sets once the view's data is
// on screen (route.js, `markReady`), measured from the start of navigation, each run in a fresh
// browser context (cold cache). BENCH_WARMUP (seconds, default 120) lets the demo run first.
import { launchBrowser, startSightline, waitForShop, sendWideTrace, waitForTrace, getJson } from './harness.mjs';

const binary = process.env.SIGHTLINE_BIN ?? 'target/release/sightline';
const warmupSeconds = Number(process.env.BENCH_WARMUP ?? 120);
const runs = Number(process.env.BENCH_RUNS ?? 7);

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

const server = await startSightline(binary);
const browser = await launchBrowser();
try {
  const base = server.base;
  await waitForShop(base);
  console.log(`demo running; warming up for ${warmupSeconds} s`);
  await new Promise((r) => setTimeout(r, warmupSeconds * 1000));
  const wide = await sendWideTrace(server.otlpHttp);
  await waitForTrace(base, wide.traceId, wide.count);
  const now = Math.floor(Date.now() / 1000);
  const checkout = (await getJson(`${base}/api/v1/traces?operation=POST%20/checkout&limit=1&start=${now - 900}`)).data[0];
  const spans = (await getJson(`${base}/api/v1/status/storage`)).spans_acknowledged;

  const views = [
    ['map', '/map?from=now-15m'],
    ['top', '/top?from=now-15m'],
    ['service', '/service/frontend?from=now-15m'],
    ['search', '/search?service=frontend&from=now-15m'],
    ['trace', `/trace/${checkout.trace_id}`],
    ['trace', `/trace/${wide.traceId}`, '10,000-span trace'],
  ];
  const rows = [];
  for (const [view, path, label] of views) {
    const ready = [];
    const paint = [];
    for (let run = 0; run < runs; run++) {
      const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
      const page = await context.newPage();
      await page.goto(base + path);
      await page.waitForSelector(`html[data-ready="${view}"]`, { timeout: 30000 });
      const marks = await page.evaluate((name) => ({
        ready: performance.getEntriesByName(`ready:${name}`)[0].startTime,
        paint: performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? NaN,
      }), view);
      ready.push(marks.ready);
      paint.push(marks.paint);
      await context.close();
    }
    ready.sort((a, b) => a - b);
    paint.sort((a, b) => a - b);
    rows.push({ view: label ?? path.split('?')[0].replace(/\/trace\/.*/, `/trace/{id} (${checkout.span_count} spans)`), fcp: quantile(paint, 0.5), median: quantile(ready, 0.5), worst: ready[ready.length - 1] });
  }

  const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  const page = await context.newPage();
  await page.goto(`${base}/trace/${wide.traceId}`);
  await page.waitForSelector('html[data-ready="trace"]');
  // 600 frames down and back up at a fixed speed: 4 rows a frame (100 px, a brisk wheel) and
  // 33 rows a frame (800 px, dragging the scrollbar), each frame's time from one animation frame
  // to the next.
  const scroll = (pixelsPerFrame) => page.evaluate(async (step) => {
    const waterfall = document.querySelector('[data-testid="waterfall"]');
    waterfall.scrollTop = 0;
    await new Promise((resolve) => requestAnimationFrame(resolve));
    const times = [];
    let drawnMax = 0;
    let last = performance.now();
    for (let i = 0; i < 600; i++) {
      waterfall.scrollTop += i < 300 ? step : -step;
      await new Promise((resolve) => requestAnimationFrame(resolve));
      const now = performance.now();
      times.push(now - last);
      last = now;
      drawnMax = Math.max(drawnMax, waterfall.querySelectorAll('.span-row').length);
    }
    return { times: times.sort((a, b) => a - b), drawnMax };
  }, pixelsPerFrame);
  const scrolls = [[100, await scroll(100)], [800, await scroll(800)]];
  await context.close();

  console.log(`\nUI benchmark: ${runs} cold loads per view, demo data after ${warmupSeconds} s warm-up (${spans} spans stored), headless Chromium, 1440×900`);
  console.log('| view | first contentful paint (median) | meaningful paint (median) | meaningful paint (worst) |');
  console.log('| --- | --- | --- | --- |');
  for (const r of rows) console.log(`| ${r.view} | ${r.fcp.toFixed(0)} ms | ${r.median.toFixed(0)} ms | ${r.worst.toFixed(0)} ms |`);
  console.log('\nScrolling the 10,000-span trace, 600 frames each:');
  console.log('| speed | rows in the page (max) | frame p50 | p95 | p99 | max | frames > 17.7 ms | frames > 50 ms |');
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const [pixels, { times, drawnMax }] of scrolls) {
    const f = (q) => `${quantile(times, q).toFixed(1)} ms`;
    console.log(`| ${pixels} px (${Math.round(pixels / 24)} rows) per frame | ${drawnMax} | ${f(0.5)} | ${f(0.95)} | ${f(0.99)} | ${times[times.length - 1].toFixed(1)} ms | ${times.filter((t) => t > 1000 / 60 + 1).length} | ${times.filter((t) => t > 50).length} |`);
  }
} finally {
  await browser.close();
  await server.stop();
}
