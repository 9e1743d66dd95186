// Remote control for a headless Chromium, used by the Go end-to-end tests.
//
// The Go test starts `node driver.mjs` and talks to it with one JSON object
// per line: a request {"id": n, "op": "...", ...} on stdin, an answer
// {"id": n, "ok": true, "value": ...} or {"id": n, "ok": false, "error": "..."}
// on stdout. Everything else (browser console, page errors) goes to stderr,
// which the test copies into its log. The browser is Debian's chromium
// (CHROMIUM, default /usr/bin/chromium) with a fresh profile: playwright-core
// never downloads one. Closing stdin closes the browser and ends the process.
import { chromium } from 'playwright-core';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const flags = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const profile = await mkdtemp(join(tmpdir(), 'sse-e2e-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  args: flags,
  viewport: { width: 1200, height: 900 },
});
const pages = new Map();
let nextPage = 1;

function watch(name, page) {
  page.on('console', (m) => process.stderr.write(`[${name} console.${m.type()}] ${m.text()}\n`));
  page.on('pageerror', (e) => process.stderr.write(`[${name} pageerror] ${e.message}\n`));
}

// The persistent context opens with one blank page: it is page 1.
for (const p of context.pages()) {
  const name = String(nextPage++);
  pages.set(name, p);
  watch(name, p);
}

function page(name) {
  const p = pages.get(String(name || '1'));
  if (!p) throw new Error(`no page ${name}`);
  return p;
}

const ops = {
  async newPage() {
    const p = await context.newPage();
    const name = String(nextPage++);
    pages.set(name, p);
    watch(name, p);
    return name;
  },
  async goto(req) {
    const resp = await page(req.page).goto(req.url, { waitUntil: 'load', timeout: req.timeoutMs || 15000 });
    return resp ? resp.status() : 0;
  },
  // eval runs a JavaScript expression in the page; a promise is awaited.
  async eval(req) {
    return page(req.page).evaluate(req.expr);
  },
  // wait polls a JavaScript expression until it is truthy. It polls with
  // evaluate rather than waitForFunction, which evaluates a string with
  // eval() in the page and so is refused by the demo page's CSP.
  async wait(req) {
    const deadline = Date.now() + (req.timeoutMs || 15000);
    for (;;) {
      const v = await page(req.page).evaluate(req.expr);
      if (v) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${req.expr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  },
  async fill(req) {
    await page(req.page).fill(req.selector, req.value);
    return null;
  },
  async click(req) {
    await page(req.page).click(req.selector);
    return null;
  },
  async screenshot(req) {
    await page(req.page).screenshot({ path: req.path, fullPage: true });
    return req.path;
  },
};

async function close() {
  await context.close().catch(() => {});
  await rm(profile, { recursive: true, force: true }).catch(() => {});
}

process.stdout.write(JSON.stringify({ id: 0, ok: true, value: context.browser()?.version() || 'chromium' }) + '\n');

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  if (line.trim() === '') continue;
  let req;
  try {
    req = JSON.parse(line);
  } catch (e) {
    process.stdout.write(JSON.stringify({ id: -1, ok: false, error: `bad request: ${e.message}` }) + '\n');
    continue;
  }
  let answer;
  try {
    const fn = ops[req.op];
    if (!fn) throw new Error(`unknown op ${req.op}`);
    const value = await fn(req);
    answer = { id: req.id, ok: true, value: value === undefined ? null : value };
  } catch (e) {
    answer = { id: req.id, ok: false, error: String(e && e.message ? e.message : e) };
  }
  process.stdout.write(JSON.stringify(answer) + '\n');
}
await close();
