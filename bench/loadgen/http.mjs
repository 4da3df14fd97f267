#!/usr/bin/env node
// Closed-loop HTTP load generator for bench/reads.py (reads) and bench/writes.py (writes).
//
// `node bench/loadgen/http.mjs --config cfg.json` where cfg is
//   { baseUrl, concurrency, warmupS, durationS, serverPid, clkTck,
//     requests: [{ path, token, body }] }        // body: a string; "{seq}" -> a unique number
// `concurrency` clients (keep-alive, one request in flight each) go round-robin over
// `requests` for `warmupS` (not measured) then `durationS` seconds. Prints ONE JSON
// line: requests, errors (+ a sample), requests/s, latency p50/p95/p99/max (ms), and
// the server's CPU over the measured phase (its /proc process tree), per request.
import http from 'node:http';
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';

const args = process.argv.slice(2);
const cfg = JSON.parse(fs.readFileSync(args[args.indexOf('--config') + 1], 'utf8'));
const base = new URL(cfg.baseUrl);
const agent = new http.Agent({ keepAlive: true, maxSockets: cfg.concurrency });

function treeCpuTicks(pid) {
  let total = 0;
  const seen = new Set();
  const walk = (p) => {
    if (seen.has(p)) return;
    seen.add(p);
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      total += Number(f[11]) + Number(f[12]);
    } catch {
      return;
    }
    let tasks = [];
    try {
      tasks = fs.readdirSync(`/proc/${p}/task`);
    } catch {
      /* gone */
    }
    for (const t of tasks) {
      try {
        for (const c of fs.readFileSync(`/proc/${p}/task/${t}/children`, 'utf8').split(' ').filter(Boolean)) walk(Number(c));
      } catch {
        /* gone */
      }
    }
  };
  if (pid) walk(pid);
  return total;
}

let seq = 0;
let measuring = false;
let stopping = false;
const lat = [];
let errors = 0;
let errorSample = null;
let count = 0;

function once(req) {
  return new Promise((resolve) => {
    const body = req.body.includes('{seq}') ? req.body.replaceAll('{seq}', String(++seq)) : req.body;
    const t0 = performance.now();
    const r = http.request(
      {
        agent,
        host: base.hostname,
        port: base.port,
        path: req.path,
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          ...(req.token ? { authorization: `Bearer ${req.token}` } : {}),
        },
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const ms = performance.now() - t0;
          const text = Buffer.concat(chunks).toString('utf8');
          const bad = res.statusCode !== 200 || text.includes('"errors"');
          if (measuring) {
            count += 1;
            lat.push(ms);
            if (bad) {
              errors += 1;
              errorSample ||= `HTTP ${res.statusCode} ${text.slice(0, 300)}`;
            }
          }
          resolve();
        });
      },
    );
    r.on('error', (e) => {
      if (measuring) {
        count += 1;
        errors += 1;
        errorSample ||= e.message;
      }
      resolve();
    });
    r.end(body);
  });
}

async function client(k) {
  let i = k;
  while (!stopping) {
    await once(cfg.requests[i % cfg.requests.length]);
    i += cfg.concurrency;
  }
}

const pct = (sorted, p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : null);
const r3 = (x) => (x == null ? null : Math.round(x * 1000) / 1000);

const clients = Array.from({ length: cfg.concurrency }, (_, k) => client(k));
await new Promise((r) => setTimeout(r, cfg.warmupS * 1000));
const cpu0 = treeCpuTicks(cfg.serverPid);
const own0 = process.cpuUsage();
const t0 = performance.now();
measuring = true;
await new Promise((r) => setTimeout(r, cfg.durationS * 1000));
measuring = false;
const elapsed = (performance.now() - t0) / 1000;
const cpu1 = treeCpuTicks(cfg.serverPid);
const own = process.cpuUsage(own0);
stopping = true;
await Promise.all(clients);
agent.destroy();
lat.sort((a, b) => a - b);
const serverCpuS = (cpu1 - cpu0) / (cfg.clkTck || 100);
process.stdout.write(
  `${JSON.stringify({
    requests: count,
    errors,
    error_sample: errorSample,
    seconds: r3(elapsed),
    rps: Math.round((count / elapsed) * 10) / 10,
    p50_ms: r3(pct(lat, 50)),
    p95_ms: r3(pct(lat, 95)),
    p99_ms: r3(pct(lat, 99)),
    max_ms: r3(lat[lat.length - 1]),
    server_cpu_s: r3(serverCpuS),
    server_cpu_ms_per_request: count ? r3((serverCpuS * 1000) / count) : null,
    loadgen_cpu_pct: Math.round(((own.user + own.system) / 1e6 / elapsed) * 1000) / 10,
  })}\n`,
);
