// Shared by the browser tests and the UI benchmark: Sightline as a child process, Debian's
// headless Chromium, the demo shop's readiness, and a synthetic trace of many spans.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

/**
 * Debian's Chromium, headless, with everything that would reach outside the machine turned off.
 * Playwright gives it a new, empty profile directory of its own.
 */
export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}

/**
 * Starts `sightline serve --demo` on ephemeral loopback ports in a fresh data directory, and
 * resolves once it logs its addresses.
 */
export function startSightline(binary, extraArgs = []) {
  const dataDir = mkdtempSync(join(tmpdir(), 'sightline-ui-'));
  const child = spawn(binary, [
    'serve', '--data-dir', dataDir, '--http-addr', '127.0.0.1:0', '--otlp-grpc-addr', '127.0.0.1:0',
    '--otlp-http-addr', '127.0.0.1:0', '--demo', '--edge-wait', '1s', ...extraArgs,
  ], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, RUST_LOG: 'info' } });
  const log = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`sightline did not start:\n${log.join('\n')}`)), 60000);
    child.on('exit', (code) => reject(new Error(`sightline exited (${code}):\n${log.join('\n')}`)));
    let buffered = '';
    child.stderr.on('data', (chunk) => {
      buffered += chunk;
      const lines = buffered.split('\n');
      buffered = lines.pop();
      for (const line of lines) {
        log.push(line);
        const started = /sightline started .*otlp_http=(\S+) http=(\S+)/.exec(line);
        if (started) {
          clearTimeout(timer);
          resolve({
            base: `http://${started[2]}`,
            otlpHttp: `http://${started[1]}`,
            log,
            stop() {
              child.removeAllListeners('exit');
              child.kill('SIGTERM');
              return new Promise((done) => {
                child.on('exit', () => {
                  rmSync(dataDir, { recursive: true, force: true });
                  done();
                });
              });
            },
          });
        }
      }
    });
  });
}

export async function getJson(url) {
  const response = await fetch(url);
  const body = await response.text();
  if (!response.ok) throw new Error(`${url}: ${response.status} ${body}`);
  return JSON.parse(body);
}

export const DEMO_NODES = ['auth', 'cart', 'catalog', 'frontend', 'fulfillment', 'orders', 'payments', 'postgresql', 'stripe'];

/** Waits until the demo shop's whole map, with every edge, is in the last 15 minutes' topology. */
export async function waitForShop(base, timeoutMs = 90000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const topology = await getJson(`${base}/api/v1/topology?start=${Math.floor(Date.now() / 1000) - 900}`);
    const nodes = topology.nodes.map((n) => n.id).sort();
    if (DEMO_NODES.every((n) => nodes.includes(n)) && topology.edges.length >= 11) return topology;
    if (Date.now() > deadline) throw new Error(`the demo shop is incomplete: ${JSON.stringify(nodes)}, ${topology.edges.length} edges`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/**
 * Sends one trace of `1 + fanout + fanout * leaves` spans over OTLP/HTTP JSON: a root, `fanout`
 * children across five services, each with `leaves` children; every 97th span fails. Returns the
 * trace id and the span ids in the waterfall's order (pre-order, by start time).
 */
export async function sendWideTrace(otlpHttp, { fanout = 99, leaves = 100 } = {}) {
  const traceId = randomBytes(16).toString('hex');
  const now = BigInt(Date.now()) * 1000000n;
  const services = ['gateway', 'ledger', 'risk', 'search', 'mailer'];
  const spans = [];
  const order = [];
  let n = 0;
  const add = (service, name, parent, startOffsetUs, durationUs) => {
    const spanId = randomBytes(8).toString('hex');
    const start = now + BigInt(startOffsetUs) * 1000n;
    n += 1;
    spans.push({
      service,
      span: {
        traceId, spanId, parentSpanId: parent ?? '', name, kind: 2,
        startTimeUnixNano: String(start), endTimeUnixNano: String(start + BigInt(durationUs) * 1000n),
        attributes: [{ key: 'batch.index', value: { intValue: String(n) } }],
        status: n % 97 === 0 ? { code: 2, message: `failure ${n}` } : {},
      },
    });
    order.push(spanId);
    return spanId;
  };
  const root = add('gateway', 'batch import', null, 0, fanout * leaves * 10 + 1000);
  for (let c = 0; c < fanout; c++) {
    const child = add(services[c % services.length], `import part ${c}`, root, 100 + c * leaves * 10, leaves * 10);
    for (let l = 0; l < leaves; l++) add(services[(c + l) % services.length], `record ${c}.${l}`, child, 100 + c * leaves * 10 + l * 10, 8);
  }
  for (let at = 0; at < spans.length; at += 1000) {
    const batch = spans.slice(at, at + 1000);
    const byService = new Map();
    for (const { service, span } of batch) (byService.get(service) ?? byService.set(service, []).get(service)).push(span);
    const body = {
      resourceSpans: [...byService].map(([service, list]) => ({
        resource: { attributes: [{ key: 'service.name', value: { stringValue: service } }] },
        scopeSpans: [{ scope: { name: 'sightline-ui-tests' }, spans: list }],
      })),
    };
    const response = await fetch(`${otlpHttp}/v1/traces`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (!response.ok) throw new Error(`OTLP export failed: ${response.status} ${await response.text()}`);
  }
  return { traceId, order, count: spans.length };
}

/** Waits until the whole trace can be read back. */
export async function waitForTrace(base, traceId, count, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const response = await fetch(`${base}/api/v1/traces/${traceId}`);
    if (response.ok && (await response.json()).spans.length === count) return;
    if (Date.now() > deadline) throw new Error(`trace ${traceId} did not arrive whole`);
    await new Promise((r) => setTimeout(r, 300));
  }
}
