// Node.js Promises doing the work of bench_deferred.c, for comparison.
// Argument: rounds (1,000,000). A "deferred" is a Promise with its resolve
// function taken out; callbacks are .then() steps. Promise reactions run as
// microtasks, so the loop yields (await) every 256 rounds to let them run,
// as bench_deferred.c lets its reactor turn every 256 rounds.
'use strict';
const { Worker } = require('worker_threads');

const cb = (r) => r + 1;
let sink = 0;

async function flat(n) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    let resolve;
    const p = new Promise((res) => { resolve = res; });
    p.then(cb).then(cb).then((v) => { sink += v; });
    resolve(i);
    if ((i & 255) === 255) await null;
  }
  await null;
  return Number(process.hrtime.bigint() - t0) / n;
}

async function nested(n) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    let resolve, resolveInner;
    const inner = new Promise((res) => { resolveInner = res; });
    const p = new Promise((res) => { resolve = res; });
    p.then(() => inner).then(cb).then((v) => { sink += v; });
    resolve(i);
    resolveInner(i);
    if ((i & 255) === 255) await null;
  }
  await new Promise((res) => setImmediate(res));
  return Number(process.hrtime.bigint() - t0) / n;
}

// deferToThread's peer: a message round trip to one of 4 worker threads.
async function threads(n, inFlight) {
  const code = `const { parentPort } = require('worker_threads');
    parentPort.on('message', (m) => parentPort.postMessage(m));`;
  const workers = [];
  for (let i = 0; i < 4; i++) workers.push(new Worker(code, { eval: true }));
  const pending = [];
  for (const w of workers) w.on('message', () => pending.shift()());
  let next = 0;
  const call = () => new Promise((res) => {
    pending.push(res);
    workers[next++ & 3].postMessage(0);
  });
  // Round-robin replies come back in order per worker, not globally; with
  // identical trivial jobs the FIFO of resolvers is only a counter anyway.
  let left = n;
  const t0 = process.hrtime.bigint();
  async function lane() {
    while (left > 0) { left--; await call(); }
  }
  const lanes = [];
  for (let i = 0; i < inFlight; i++) lanes.push(lane());
  await Promise.all(lanes);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  for (const w of workers) await w.terminate();
  return n / secs;
}

(async () => {
  const n = Number(process.argv[2] || 1000000);
  await flat(n / 10);
  console.log(`create+2 callbacks+fire+free:   ${(await flat(n)).toFixed(1).padStart(7)} ns/deferred`);
  console.log(`same with a nested deferred:    ${(await nested(n)).toFixed(1).padStart(7)} ns/round`);
  const tn = Math.min(n / 10, 200000);
  console.log(`worker round trip, 1 in flight: ${(await threads(tn, 1)).toFixed(0).padStart(9)} round trips/s`);
  console.log(`worker round trip, 256 in flight:${(await threads(tn, 256)).toFixed(0).padStart(9)} round trips/s`);
})();
