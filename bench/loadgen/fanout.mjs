#!/usr/bin/env node
// Fan-out load generator (graphql-transport-ws over `ws`, mutations over HTTP).
//
// One master process (this file) plus --procs worker processes (this file again,
// forked with FANOUT_WORKER=1):
//   * the workers hold the N WebSockets (split evenly; permessage-deflate OFF):
//     connection_init {"authorization":"Bearer <token>"} -> connection_ack ->
//     subscribe {id:"1", query, variables:{c: conversationId}}; they count every
//     delivery per socket (loss, duplicates, reordering) and the end-to-end latency;
//   * the master only drives: it sends the sendMessage mutations over HTTP
//     (keep-alive, bounded number in flight, at --rate msg/s or as fast as the
//     server answers), reads the server's CPU and RSS from /proc, and prints ONE
//     JSON object on stdout (progress goes to stderr).
//
// Latency: every mutation's clientMessageId, and the start of its body, is "bn<run>.<seq>.<sendUs>", sendUs
// read from CLOCK_MONOTONIC (process.hrtime / performance.now, the same clock in
// every process on the machine) just before the request is written; a worker
// reads the same clock when the frame arrives, so latency = receive - send needs
// no clock sync, even with several worker processes.
//
// Knowing that everyone is subscribed: graphql-transport-ws has no subscribe ack,
// so after connecting the master sends "probe" messages (clientMessageId
// "pr<run>.<k>.<us>") until every acked socket has received one. That time is
// reported as subscribed_s; probes are not counted in the measured phase.
//
// Showing the generator is not the bottleneck (see also bench/README.md):
//   * each process reports its own CPU time over the measured phase
//     (loadgen.worker_cpu_pct is the busiest worker: 100 % = one core saturated)
//     and its event-loop delay (loadgen.eld_p99_ms); loadgen.saturated is set
//     when a worker was >= 85 % busy, in which case the figure measures the
//     generator, not the server;
//   * the same generator drives the ws floor in the same run: the floor's
//     deliveries/s is an upper bound of what the generator can absorb, so a
//     server that reaches a small fraction of it is measured, not the generator;
//   * frames are matched with Buffer.indexOf on the marker (native, no JSON.parse
//     per delivery); only control frames, probes and one sample per worker are parsed;
//   * --procs 2 spreads the sockets over two worker processes (useful for the floor;
//     on a 2-core box it also takes CPU away from the server, so it is not default).
//
// Usage:
//   node bench/loadgen/fanout.mjs --config cfg.json          (what bench/run.py does)
//   node bench/loadgen/fanout.mjs --ws ws://127.0.0.1:4000/graphql \
//        --http http://127.0.0.1:4000/graphql --conv <id> --token <t> [--token <t2> ...] \
//        --sockets 1000 --messages 100 [--rate 0] [--inflight 8] [--procs 1] [--server-pid <pid>]
// Config keys (JSON file and flags, camelCase in the file): see DEFAULTS below.
import { fork } from 'node:child_process';
import http from 'node:http';
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { performance, monitorEventLoopDelay } from 'node:perf_hooks';
import WebSocket from 'ws';

const DEFAULTS = {
  label: 'target',
  wsUrl: 'ws://127.0.0.1:4000/graphql',
  httpUrl: 'http://127.0.0.1:4000/graphql',
  conversationId: null,
  tokens: [], // subscriber tokens; socket i uses tokens[i % tokens.length]
  senderTokens: null, // mutation senders, round-robin (default: tokens)
  sockets: 100,
  messages: 50,
  rate: 0, // messages/s; 0 = as fast as the server answers, within `inflight`
  inflight: 1, // max concurrent sendMessage requests (1: send order == server order)
  procs: 1, // worker processes holding the sockets
  connectConcurrency: 128, // handshakes in progress at once per worker
  ackTimeoutS: 30, // open -> connection_ack, per socket
  connectTimeoutS: 180,
  probeIntervalMs: 250,
  probeTimeoutS: 60,
  warmupMessages: null, // unmeasured messages after the probes (JIT, caches); default ~20000/N, 3..20
  drainIdleS: 10, // stop waiting for deliveries after this long without progress
  deadlineS: 300, // hard limit for the whole run
  bodyBytes: 64,
  serverPid: null, // root pid of the server; its whole process tree is measured
  clkTck: 100, // USER_HZ (run.py passes os.sysconf('SC_CLK_TCK'))
  subscriptionQuery:
    'subscription($c: ID!) { messageEvents(conversationId: $c) { kind cursor message { id body clientMessageId createdAt editedAt deletedAt isDeleted sender { id username displayName } conversation { id } editHistory { body editedAt } attachments { id } mentions { id } } } }',
  mutationQuery:
    'mutation Send($input: SendMessageInput!) { sendMessage(input: $input) { id clientMessageId } }',
};

// ------------------------------------------------------------------ clock (µs, CLOCK_MONOTONIC)
const CLOCK_OFFSET_US = Number(process.hrtime.bigint() / 1000n) - performance.now() * 1000;
const nowUs = () => performance.now() * 1000 + CLOCK_OFFSET_US;

// ------------------------------------------------------------------ log-bucket histogram (≤1 % error)
const H_BASE = 1.01;
const H_INV_LN = 1 / Math.log(H_BASE);
const H_N = 2400; // 1.01^2400 µs ≈ 2.3e10 µs: anything sane
class Hist {
  constructor(buckets) {
    this.b = buckets ? Float64Array.from(buckets) : new Float64Array(H_N);
    this.n = 0;
    this.sum = 0;
    this.max = 0;
    this.min = Infinity;
    this.negative = 0;
  }
  record(us) {
    if (us < 0) {
      this.negative += 1;
      us = 0;
    }
    const i = us <= 1 ? 0 : Math.min(H_N - 1, Math.ceil(Math.log(us) * H_INV_LN));
    this.b[i] += 1;
    this.n += 1;
    this.sum += us;
    if (us > this.max) this.max = us;
    if (us < this.min) this.min = us;
  }
  merge(o) {
    for (let i = 0; i < H_N; i++) this.b[i] += o.b[i];
    this.n += o.n;
    this.sum += o.sum;
    this.max = Math.max(this.max, o.max);
    this.min = Math.min(this.min, o.min);
    this.negative += o.negative;
  }
  pct(p) {
    if (!this.n) return null;
    const want = Math.max(1, Math.ceil((p / 100) * this.n));
    let c = 0;
    for (let i = 0; i < H_N; i++) {
      c += this.b[i];
      if (c >= want) return Math.min(this.max, Math.pow(H_BASE, i));
    }
    return this.max;
  }
  toJSON() {
    return { b: Array.from(this.b), n: this.n, sum: this.sum, max: this.max, min: this.min, negative: this.negative };
  }
  static from(j) {
    const h = new Hist(j.b);
    Object.assign(h, { n: j.n, sum: j.sum, max: j.max, min: j.min, negative: j.negative });
    return h;
  }
  summaryMs() {
    const r = (us) => (us == null ? null : Math.round(us) / 1000);
    return {
      count: this.n,
      p50: r(this.pct(50)),
      p95: r(this.pct(95)),
      p99: r(this.pct(99)),
      max: this.n ? r(this.max) : null,
      mean: this.n ? r(this.sum / this.n) : null,
    };
  }
}

const log = (...a) => process.stderr.write(`[fanout${IS_WORKER() ? ` w${process.env.FANOUT_WORKER_INDEX}` : ''}] ${a.join(' ')}\n`);
function IS_WORKER() {
  return process.env.FANOUT_WORKER === '1';
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ================================================================== worker
function workerMain() {
  let cfg;
  let start = 0;
  let count = 0;
  let M = 0;
  let sockets = [];
  let seen; // Uint8Array(count * M)
  let lastSeq; // Int32Array(count)
  let perSock; // Uint32Array(count)
  let orderHash; // Uint32Array(count): rolling hash of the order each socket saw
  let state; // Uint8Array: 0 pending, 1 acked, 2 failed, 3 closed after ack
  let probed; // Uint8Array
  let benchMarker;
  let probeMarker;
  let subscribeFrame;
  let phase = 'init';
  const hist = new Hist();
  const eld = monitorEventLoopDelay({ resolution: 10 });
  const st = {
    acked: 0,
    failed: 0,
    failCodes: {},
    failSample: null,
    unexpectedCloses: 0,
    closeCodes: {},
    closeSample: null,
    frames: 0,
    benchFrames: 0,
    benchBytes: 0,
    unique: 0,
    dup: 0,
    reorder: 0,
    badSeq: 0,
    probedCount: 0,
    probeFrames: 0,
    probeLastFirstUs: 0,
    errorFrames: 0,
    errorSample: null,
    completeFrames: 0,
    otherNext: 0,
    pings: 0,
    unknown: 0,
    shapeChecked: 0,
    shapeErrors: 0,
    shapeSample: null,
    frameBytesSample: null,
    firstDeliveryUs: 0,
    lastDeliveryUs: 0,
    connectDoneUs: 0,
  };
  let measureCpu0 = null;
  let measureT0 = 0;
  let measured = null;
  let benchShapeChecked = false;

  // integer parsing straight from the Buffer, no allocation
  let numEnd = 0;
  function readNum(buf, pos) {
    let v = 0;
    let c;
    while (pos < buf.length && (c = buf[pos]) >= 48 && c <= 57) {
      v = v * 10 + (c - 48);
      pos += 1;
    }
    numEnd = pos;
    return v;
  }

  function checkShape(obj) {
    const problems = [];
    const need = (cond, what) => {
      if (!cond) problems.push(what);
    };
    need(obj && obj.type === 'next', 'type!=next');
    need(obj && obj.id === '1', 'id!=1');
    const p = obj?.payload;
    need(!p?.errors, `errors: ${JSON.stringify(p?.errors)?.slice(0, 200)}`);
    const ev = p?.data?.messageEvents;
    need(ev && ev.kind === 'ADDED', 'kind');
    need(typeof ev?.cursor === 'string' && ev.cursor.length > 0, 'cursor');
    const m = ev?.message || {};
    need(typeof m.id === 'string', 'message.id');
    need(m.conversation && m.conversation.id === cfg.conversationId, 'message.conversation.id');
    need(m.sender && typeof m.sender.id === 'string', 'sender.id');
    need(typeof m.sender?.username === 'string', 'sender.username');
    need(typeof m.sender?.displayName === 'string', 'sender.displayName');
    need(typeof m.body === 'string', 'body');
    // echoed to the sender only (string), null for everyone else
    need(m.clientMessageId === null || typeof m.clientMessageId === 'string', 'clientMessageId');
    need(typeof m.createdAt === 'string', 'createdAt');
    need('editedAt' in m && m.editedAt === null, 'editedAt');
    need('deletedAt' in m && m.deletedAt === null, 'deletedAt');
    need(m.isDeleted === false, 'isDeleted');
    need(Array.isArray(m.editHistory), 'editHistory');
    need(Array.isArray(m.attachments), 'attachments');
    need(Array.isArray(m.mentions), 'mentions');
    st.shapeChecked += 1;
    if (problems.length) {
      st.shapeErrors += 1;
      if (!st.shapeSample) st.shapeSample = problems.join(', ');
    }
  }

  function onBench(i, buf, pos) {
    const recv = nowUs();
    const seq = readNum(buf, pos);
    const sent = buf[numEnd] === 46 ? readNum(buf, numEnd + 1) : -1;
    if (seq >= M || sent < 0) {
      st.badSeq += 1;
      return;
    }
    st.benchFrames += 1;
    st.benchBytes += buf.length;
    const k = i * M + seq;
    if (seen[k]) {
      st.dup += 1;
      return;
    }
    seen[k] = 1;
    st.unique += 1;
    perSock[i] += 1;
    orderHash[i] = (Math.imul(orderHash[i], 31) + seq + 1) >>> 0;
    if (seq < lastSeq[i]) st.reorder += 1;
    else lastSeq[i] = seq;
    hist.record(recv - sent);
    if (!st.firstDeliveryUs) st.firstDeliveryUs = recv;
    st.lastDeliveryUs = recv;
    if (!benchShapeChecked) {
      benchShapeChecked = true;
      st.frameBytesSample = buf.length;
      try {
        checkShape(JSON.parse(buf.toString('utf8')));
      } catch (e) {
        st.shapeErrors += 1;
        st.shapeSample ||= `unparsable: ${e.message}`;
      }
    }
  }

  function onProbe(i, buf) {
    st.probeFrames += 1;
    if (probed[i]) return;
    probed[i] = 1;
    st.probedCount += 1;
    st.probeLastFirstUs = nowUs();
    try {
      checkShape(JSON.parse(buf.toString('utf8')));
    } catch (e) {
      st.shapeErrors += 1;
      st.shapeSample ||= `unparsable: ${e.message}`;
    }
  }

  function onControl(i, buf) {
    let msg;
    try {
      msg = JSON.parse(buf.toString('utf8'));
    } catch {
      st.unknown += 1;
      return;
    }
    switch (msg.type) {
      case 'connection_ack':
        if (state[i] === 0) {
          state[i] = 1;
          st.acked += 1;
          sockets[i].send(subscribeFrame);
          settle(i);
        }
        return;
      case 'ping':
        st.pings += 1;
        sockets[i].send('{"type":"pong"}');
        return;
      case 'pong':
        return;
      case 'error':
        st.errorFrames += 1;
        st.errorSample ||= JSON.stringify(msg.payload).slice(0, 300);
        return;
      case 'complete':
        st.completeFrames += 1;
        return;
      case 'next':
        if (msg.payload?.errors) {
          st.errorFrames += 1;
          st.errorSample ||= JSON.stringify(msg.payload.errors).slice(0, 300);
        } else st.otherNext += 1;
        return;
      default:
        st.unknown += 1;
    }
  }

  let settled = 0;
  let inProgress = 0;
  let nextToOpen = 0;
  let connectResolve = null;
  const ackTimers = [];

  function settle(i) {
    clearTimeout(ackTimers[i]);
    inProgress -= 1;
    settled += 1;
    pump();
  }

  function onClose(i, code, reason) {
    const key = String(code);
    if (state[i] === 0) {
      state[i] = 2;
      st.failed += 1;
      st.failCodes[key] = (st.failCodes[key] || 0) + 1;
      st.failSample ||= `${code} ${reason?.toString() || ''}`.trim();
      settle(i);
      return;
    }
    if (state[i] === 1) {
      state[i] = 3;
      if (phase !== 'closing') {
        st.unexpectedCloses += 1;
        st.closeCodes[key] = (st.closeCodes[key] || 0) + 1;
        st.closeSample ||= `${code} ${reason?.toString() || ''}`.trim();
      }
    }
  }

  function open(i) {
    const token = cfg.tokens[(start + i) % cfg.tokens.length];
    const ws = new WebSocket(cfg.wsUrl, 'graphql-transport-ws', {
      perMessageDeflate: false,
      handshakeTimeout: cfg.ackTimeoutS * 1000,
    });
    sockets[i] = ws;
    ackTimers[i] = setTimeout(() => {
      if (state[i] === 0) ws.terminate();
    }, cfg.ackTimeoutS * 1000);
    ws.on('open', () => {
      ws.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } }));
    });
    ws.on('message', (data) => {
      st.frames += 1;
      let k = data.indexOf(benchMarker);
      if (k >= 0) return onBench(i, data, k + benchMarker.length);
      k = data.indexOf(probeMarker);
      if (k >= 0) return onProbe(i, data);
      return onControl(i, data);
    });
    ws.on('close', (code, reason) => onClose(i, code, reason));
    ws.on('error', (e) => {
      if (state[i] === 0) st.failSample ||= `error: ${e.message}`.slice(0, 200);
    });
  }

  function pump() {
    while (inProgress < cfg.connectConcurrency && nextToOpen < count) {
      inProgress += 1;
      open(nextToOpen++);
    }
    if (settled === count && connectResolve) {
      st.connectDoneUs = nowUs();
      const r = connectResolve;
      connectResolve = null;
      phase = 'ready';
      r();
    }
  }

  const status = () => ({
    acked: st.acked,
    failed: st.failed,
    frames: st.frames,
    unique: st.unique,
    probedCount: st.probedCount,
    probeLastFirstUs: st.probeLastFirstUs,
    lastDeliveryUs: st.lastDeliveryUs,
    unexpectedCloses: st.unexpectedCloses,
  });

  const handlers = {
    init(m) {
      cfg = m.cfg;
      start = m.start;
      count = m.end - m.start;
      M = cfg.messages;
      seen = new Uint8Array(count * M);
      lastSeq = new Int32Array(count).fill(-1);
      perSock = new Uint32Array(count);
      orderHash = new Uint32Array(count);
      state = new Uint8Array(count);
      probed = new Uint8Array(count);
      sockets = new Array(count);
      benchMarker = Buffer.from(`bn${cfg.runId}.`);
      probeMarker = Buffer.from(`pr${cfg.runId}.`);
      subscribeFrame = JSON.stringify({
        id: '1',
        type: 'subscribe',
        payload: { query: cfg.subscriptionQuery, variables: { c: cfg.conversationId } },
      });
      return { count };
    },
    async connect() {
      phase = 'connect';
      if (count > 0) {
        await new Promise((resolve) => {
          connectResolve = resolve;
          pump();
        });
      } else phase = 'ready';
      return { ...status(), failCodes: st.failCodes, failSample: st.failSample, connectDoneUs: st.connectDoneUs };
    },
    status,
    measureStart() {
      measureCpu0 = process.cpuUsage();
      measureT0 = nowUs();
      eld.reset();
      eld.enable();
      return {};
    },
    measureStop() {
      const c = process.cpuUsage(measureCpu0);
      eld.disable();
      const wall = nowUs() - measureT0;
      measured = {
        cpuUs: c.user + c.system,
        wallUs: wall,
        eldP99Ms: eld.count ? eld.percentile(99) / 1e6 : null,
        eldMaxMs: eld.count ? eld.max / 1e6 : null,
      };
      return measured;
    },
    report() {
      let minPer = Infinity;
      let maxPer = 0;
      for (let i = 0; i < count; i++) {
        if (perSock[i] < minPer) minPer = perSock[i];
        if (perSock[i] > maxPer) maxPer = perSock[i];
      }
      // order seen by the sockets that got every message: hash -> number of sockets
      const orders = {};
      for (let i = 0; i < count; i++) if (perSock[i] === M) orders[orderHash[i]] = (orders[orderHash[i]] || 0) + 1;
      return { st, hist: hist.toJSON(), measured, minPer: count ? minPer : 0, maxPer, count, orders };
    },
    async close() {
      phase = 'closing';
      let open = 0;
      for (const ws of sockets) {
        if (ws && ws.readyState <= 1) {
          open += 1;
          ws.close(1000, 'bench done');
        }
      }
      const t = Date.now();
      while (Date.now() - t < 3000 && sockets.some((ws) => ws && ws.readyState !== 3)) await sleep(50);
      for (const ws of sockets) if (ws && ws.readyState !== 3) ws.terminate();
      return { closed: open };
    },
  };

  process.on('message', async (m) => {
    try {
      const result = await handlers[m.cmd](m);
      process.send({ rid: m.rid, ok: true, result });
      if (m.cmd === 'close') setTimeout(() => process.exit(0), 50);
    } catch (e) {
      process.send({ rid: m.rid, ok: false, error: e.stack || String(e) });
    }
  });
  process.on('disconnect', () => process.exit(0));
  if (process.env.FANOUT_DEBUG) {
    let prev = nowUs();
    let pf = 0;
    setInterval(() => {
      const n = nowUs();
      if (n - prev > 100e3) log(`lag ${((n - prev) / 1e3).toFixed(0)}ms phase=${phase} frames=${st.frames} (+${st.frames - pf}) unique=${st.unique}`);
      prev = n;
      pf = st.frames;
    }, 20);
  }
}

// ================================================================== master
function parseArgs(argv) {
  const cfg = { ...DEFAULTS };
  const cli = {};
  const tokens = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    switch (a) {
      case '--config':
        Object.assign(cfg, JSON.parse(fs.readFileSync(v, 'utf8')));
        i++;
        break;
      case '--token':
        tokens.push(v);
        i++;
        break;
      case '--ws': cli.wsUrl = v; i++; break;
      case '--http': cli.httpUrl = v; i++; break;
      case '--conv': cli.conversationId = v; i++; break;
      case '--label': cli.label = v; i++; break;
      case '--sockets': cli.sockets = Number(v); i++; break;
      case '--messages': cli.messages = Number(v); i++; break;
      case '--rate': cli.rate = Number(v); i++; break;
      case '--inflight': cli.inflight = Number(v); i++; break;
      case '--procs': cli.procs = Number(v); i++; break;
      case '--server-pid': cli.serverPid = Number(v); i++; break;
      case '--deadline': cli.deadlineS = Number(v); i++; break;
      case '-h':
      case '--help':
        process.stdout.write(fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\nimport ')[0] + '\n');
        process.exit(0);
        break;
      default:
        throw new Error(`unknown argument ${a}`);
    }
  }
  Object.assign(cfg, cli);
  if (tokens.length) cfg.tokens = tokens;
  if (!cfg.senderTokens || !cfg.senderTokens.length) cfg.senderTokens = cfg.tokens;
  if (!cfg.conversationId) throw new Error('conversationId (--conv) is required');
  if (!cfg.tokens.length) throw new Error('at least one token (--token) is required');
  cfg.procs = Math.max(1, Math.min(cfg.procs, cfg.sockets || 1));
  if (cfg.sockets * cfg.messages > 200e6) throw new Error('sockets*messages too large (> 2e8)');
  return cfg;
}

// ------------------------------------------------------------------ /proc readers
function readStat(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // rest[0]=state(3) rest[1]=ppid(4) ... rest[11]=utime(14) rest[12]=stime(15)
    return { ppid: Number(rest[1]), ticks: Number(rest[11]) + Number(rest[12]) };
  } catch {
    return null;
  }
}
function readRssKb(pid) {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}
function pidTree(root) {
  if (!root) return [];
  const children = new Map();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const s = readStat(name);
    if (!s) continue;
    if (!children.has(s.ppid)) children.set(s.ppid, []);
    children.get(s.ppid).push(Number(name));
  }
  const out = [];
  const q = [Number(root)];
  while (q.length) {
    const p = q.shift();
    if (!fs.existsSync(`/proc/${p}`)) continue;
    out.push(p);
    for (const c of children.get(p) || []) q.push(c);
  }
  return out;
}
function serverSample(cfg) {
  const pids = pidTree(cfg.serverPid);
  let ticks = 0;
  let rssKb = 0;
  for (const p of pids) {
    const s = readStat(p);
    if (s) ticks += s.ticks;
    rssKb += readRssKb(p);
  }
  return { pids, cpuUs: (ticks * 1e6) / cfg.clkTck, rssKb, t: nowUs() };
}

// ------------------------------------------------------------------ worker RPC
function startWorkers(cfg) {
  const workers = [];
  const per = Math.ceil(cfg.sockets / cfg.procs);
  for (let w = 0; w < cfg.procs; w++) {
    const child = fork(fileURLToPath(import.meta.url), [], {
      env: { ...process.env, FANOUT_WORKER: '1', FANOUT_WORKER_INDEX: String(w) },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const pending = new Map();
    let rid = 0;
    child.on('message', (m) => {
      const p = pending.get(m.rid);
      if (!p) return;
      pending.delete(m.rid);
      if (m.ok) p.resolve(m.result);
      else p.reject(new Error(`worker ${w}: ${m.error}`));
    });
    child.on('exit', (code) => {
      for (const p of pending.values()) p.reject(new Error(`worker ${w} exited (${code})`));
      pending.clear();
    });
    const call = (cmd, args = {}) =>
      new Promise((resolve, reject) => {
        rid += 1;
        pending.set(rid, { resolve, reject });
        child.send({ rid, cmd, ...args });
      });
    workers.push({ child, call, start: Math.min(w * per, cfg.sockets), end: Math.min((w + 1) * per, cfg.sockets) });
  }
  return workers;
}
/** `promise`, or a rejection after `ms` (the timer is cleared either way: no stray rejection). */
function withTimeout(promise, ms, message) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}
const allCall = (workers, cmd, args) => Promise.all(workers.map((w) => w.call(cmd, args)));
const sum = (arr, f) => arr.reduce((a, x) => a + f(x), 0);

// ------------------------------------------------------------------ HTTP mutations
function makePoster(cfg) {
  const url = new URL(cfg.httpUrl);
  const agent = new http.Agent({ keepAlive: true, maxSockets: Math.max(cfg.inflight, 1) });
  return function post(body, token) {
    return new Promise((resolve) => {
      const data = Buffer.from(body);
      const t0 = nowUs();
      const req = http.request(
        {
          host: url.hostname,
          port: url.port,
          path: url.pathname,
          method: 'POST',
          agent,
          headers: {
            'content-type': 'application/json',
            accept: 'application/json',
            'content-length': data.length,
            authorization: `Bearer ${token}`,
          },
          timeout: 60_000,
        },
        (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => {
            const us = nowUs() - t0;
            let json = null;
            try {
              json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
            } catch {
              /* counted as error below */
            }
            const ok = res.statusCode === 200 && json && !json.errors && json.data?.sendMessage;
            resolve({ ok, us, error: ok ? null : `HTTP ${res.statusCode} ${JSON.stringify(json?.errors ?? json)?.slice(0, 300)}` });
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error('mutation timeout')));
      req.on('error', (e) => resolve({ ok: false, us: nowUs() - t0, error: e.message }));
      req.end(data);
    });
  };
}

function mutationBody(cfg, prefix, seq) {
  const sendUs = Math.round(nowUs());
  const clientMessageId = `${prefix}${cfg.runId}.${seq}.${sendUs}`;
  // The marker leads the body: every subscriber sees the body, while Parley (per the
  // contract) echoes clientMessageId to the sender only, so matching must not rely on it.
  let body = `${clientMessageId} Fan-out benchmark message #${seq}. `;
  while (body.length < cfg.bodyBytes) body += 'lorem ipsum ';
  body = body.slice(0, Math.max(cfg.bodyBytes, 16));
  return JSON.stringify({
    query: cfg.mutationQuery,
    variables: { input: { conversationId: cfg.conversationId, body, clientMessageId } },
  });
}

async function masterMain() {
  const cfg = parseArgs(process.argv.slice(2));
  cfg.runId = randomBytes(4).toString('hex');
  const out = {
    type: 'fanout',
    label: cfg.label,
    ok: false,
    error: null,
    phase: 'start',
    n: cfg.sockets,
    m: cfg.messages,
    rate: cfg.rate,
    inflight: cfg.inflight,
    procs: cfg.procs,
    users: cfg.tokens.length,
  };
  const t0 = nowUs();
  let workers = [];
  const deadline = setTimeout(() => {
    out.error = `deadline of ${cfg.deadlineS}s exceeded in phase ${out.phase}`;
    process.stdout.write(`${JSON.stringify(out)}\n`);
    for (const w of workers) w.child.kill('SIGKILL');
    process.exit(3);
  }, cfg.deadlineS * 1000);

  try {
    workers = startWorkers(cfg);
    await Promise.all(workers.map((w) => w.call('init', { cfg, start: w.start, end: w.end })));
    const post = makePoster(cfg);

    // wait until no frame arrived for ~0.5 s (late probe / warm-up deliveries), at most 15 s
    const settleFrames = async () => {
      let lastFrames = -1;
      const ts0 = nowUs();
      for (let stable = 0; stable < 2 && nowUs() - ts0 < 15e6; ) {
        await sleep(250);
        const sts = await allCall(workers, 'status');
        const f = sum(sts, (x) => x.frames);
        stable = f === lastFrames ? stable + 1 : 0;
        lastFrames = f;
      }
    };

    // ---- connect + subscribe
    out.phase = 'connect';
    const before = serverSample(cfg);
    log(`${cfg.label}: connecting ${cfg.sockets} sockets (${cfg.tokens.length} users, ${cfg.procs} worker(s))`);
    const tc0 = nowUs();
    const conn = await withTimeout(allCall(workers, 'connect'), cfg.connectTimeoutS * 1000, `connect phase exceeded ${cfg.connectTimeoutS}s`);
    const acked = sum(conn, (c) => c.acked);
    const failCodes = {};
    for (const c of conn) for (const [k, v] of Object.entries(c.failCodes)) failCodes[k] = (failCodes[k] || 0) + v;
    out.connect = {
      acked,
      failed: sum(conn, (c) => c.failed),
      fail_codes: failCodes,
      fail_sample: conn.map((c) => c.failSample).find(Boolean) || null,
      connect_s: +((Math.max(...conn.map((c) => c.connectDoneUs)) - tc0) / 1e6).toFixed(3),
    };
    log(`${cfg.label}: ${acked} acked, ${out.connect.failed} failed in ${out.connect.connect_s}s; probing subscriptions`);
    if (acked === 0) throw new Error(`no socket was acknowledged (close codes ${JSON.stringify(failCodes)}: ${out.connect.fail_sample})`);

    // ---- probe until every acked socket has received an event
    out.phase = 'probe';
    const tp0 = nowUs();
    let probes = 0;
    let probeErrors = 0;
    let probeError = null;
    let st = await allCall(workers, 'status');
    while (sum(st, (s) => s.probedCount) < acked && nowUs() - tp0 < cfg.probeTimeoutS * 1e6 && acked > 0) {
      const r = await post(mutationBody(cfg, 'pr', probes), cfg.senderTokens[probes % cfg.senderTokens.length]);
      probes += 1;
      if (!r.ok) {
        probeErrors += 1;
        probeError ||= r.error;
        if (probeErrors >= 5 && probeErrors === probes) throw new Error(`sendMessage failed: ${probeError}`);
      }
      await sleep(cfg.probeIntervalMs);
      st = await allCall(workers, 'status');
    }
    const probedCount = sum(st, (s) => s.probedCount);
    out.connect.subscribed = probedCount;
    out.connect.unsubscribed = acked - probedCount;
    out.connect.probes = probes;
    out.connect.subscribed_s = probedCount ? +((Math.max(...st.map((s) => s.probeLastFirstUs)) - tc0) / 1e6).toFixed(3) : null;
    if (probeErrors) out.connect.probe_errors = probeErrors;

    // ---- settle: wait until no frame arrived for ~0.5 s (late probe deliveries)
    await settleFrames();
    const afterSub = serverSample(cfg);
    // server CPU spent connecting + subscribing (includes the probes' fan-out)
    out.connect.server_cpu_s = +((afterSub.cpuUs - before.cpuUs) / 1e6).toFixed(3);
    out.connect.server_cpu_ms_per_socket = cfg.sockets ? +((afterSub.cpuUs - before.cpuUs) / 1e3 / cfg.sockets).toFixed(3) : null;
    log(`${cfg.label}: ${probedCount}/${acked} subscribed after ${out.connect.subscribed_s}s (${probes} probes); sending ${cfg.messages} messages`);
    // ---- warm-up: a few unmeasured messages (JIT warm-up for Node, caches for everyone)
    out.phase = 'warmup';
    const warm = cfg.warmupMessages ?? Math.max(3, Math.min(20, Math.ceil(20000 / Math.max(1, cfg.sockets))));
    for (let k = 0; k < warm && acked > 0; k++) {
      await post(mutationBody(cfg, 'pr', probes + k), cfg.senderTokens[k % cfg.senderTokens.length]);
    }
    out.connect.warmup_messages = warm;

    await settleFrames();

    // ---- measured phase: M messages, then drain
    out.phase = 'send';
    const expected = cfg.sockets * cfg.messages;
    await allCall(workers, 'measureStart');
    const masterCpuM0 = process.cpuUsage();
    const cpu0 = serverSample(cfg);
    const mutHist = new Hist();
    let mutErrors = 0;
    let mutErrorSample = null;
    let maxLagUs = 0;
    const tSend0 = nowUs();
    await new Promise((resolve) => {
      let seq = 0;
      let inflight = 0;
      let timer = null;
      const tick = () => {
        while (seq < cfg.messages && inflight < cfg.inflight) {
          if (cfg.rate > 0) {
            const due = tSend0 + (seq * 1e6) / cfg.rate;
            const now = nowUs();
            if (due > now + 500) {
              if (!timer) {
                timer = setTimeout(() => {
                  timer = null;
                  tick();
                }, (due - now) / 1000);
              }
              return;
            }
            if (now - due > maxLagUs) maxLagUs = now - due;
          }
          const s = seq++;
          inflight += 1;
          post(mutationBody(cfg, 'bn', s), cfg.senderTokens[s % cfg.senderTokens.length]).then((r) => {
            inflight -= 1;
            mutHist.record(r.us);
            if (!r.ok) {
              mutErrors += 1;
              mutErrorSample ||= r.error;
            }
            tick();
          });
        }
        if (seq >= cfg.messages && inflight === 0) resolve();
      };
      tick();
    });
    const tSendEnd = nowUs();

    out.phase = 'drain';
    let lastUnique = -1;
    let lastProgress = nowUs();
    for (;;) {
      st = await allCall(workers, 'status');
      const u = sum(st, (s) => s.unique);
      if (u >= expected) break;
      if (u !== lastUnique) {
        lastUnique = u;
        lastProgress = nowUs();
      } else if (nowUs() - lastProgress > cfg.drainIdleS * 1e6) break;
      await sleep(50);
    }
    const cpu1 = serverSample(cfg);
    const masterCpuM = process.cpuUsage(masterCpuM0);
    const meas = await allCall(workers, 'measureStop');

    // ---- collect
    out.phase = 'report';
    const reps = await allCall(workers, 'report');
    const lat = new Hist();
    for (const r of reps) lat.merge(Hist.from(r.hist));
    const S = (f) => sum(reps, (r) => f(r.st));
    const unique = S((s) => s.unique);
    const lastDeliveryUs = Math.max(...reps.map((r) => r.st.lastDeliveryUs));
    const phaseUs = Math.max(lastDeliveryUs, tSendEnd) - tSend0;
    const serverCpuUs = cpu1.cpuUs - cpu0.cpuUs;
    const closeCodes = {};
    for (const r of reps) for (const [k, v] of Object.entries(r.st.closeCodes)) closeCodes[k] = (closeCodes[k] || 0) + v;
    const benchFrames = S((s) => s.benchFrames);
    const orders = {};
    for (const r of reps) for (const [h, c] of Object.entries(r.orders)) orders[h] = (orders[h] || 0) + c;
    const orderCounts = Object.values(orders);
    const complete = orderCounts.reduce((a, b) => a + b, 0);

    out.deliveries = {
      expected,
      unique,
      lost: expected - unique,
      dup: S((s) => s.dup),
      // deliveries that arrived after a higher seq on the same socket; with --inflight > 1
      // the server may legitimately order concurrent sends differently than their seq
      reorder: S((s) => s.reorder),
      // sockets (among those that got all M) whose arrival order differs from the most common one:
      // every subscriber should see the conversation in the same order, whatever inflight is
      order_mismatch_sockets: complete - (orderCounts.length ? Math.max(...orderCounts) : 0),
      bad: S((s) => s.badSeq),
      per_socket_min: Math.min(...reps.filter((r) => r.count).map((r) => r.minPer)),
      per_socket_max: Math.max(...reps.map((r) => r.maxPer)),
      frame_bytes_avg: benchFrames ? Math.round(S((s) => s.benchBytes) / benchFrames) : null,
    };
    out.deliveries_per_s = phaseUs > 0 ? Math.round(unique / (phaseUs / 1e6)) : null;
    out.phase_s = +(phaseUs / 1e6).toFixed(3);
    out.send_s = +((tSendEnd - tSend0) / 1e6).toFixed(3);
    out.latency_ms = lat.summaryMs();
    if (lat.negative) out.latency_ms.negative = lat.negative;
    out.mutations = {
      sent: cfg.messages,
      errors: mutErrors,
      error_sample: mutErrorSample,
      achieved_rate: +(cfg.messages / ((tSendEnd - tSend0) / 1e6)).toFixed(1),
      ...Object.fromEntries(Object.entries(mutHist.summaryMs()).filter(([k]) => k !== 'count')),
    };
    if (cfg.rate > 0) out.mutations.max_schedule_lag_ms = +(maxLagUs / 1000).toFixed(1);
    out.server = {
      pids: cpu1.pids,
      cpu_s: +(serverCpuUs / 1e6).toFixed(3),
      cpu_us_per_delivery: unique ? +(serverCpuUs / unique).toFixed(3) : null,
      cpu_util_pct: +((100 * serverCpuUs) / (cpu1.t - cpu0.t)).toFixed(1),
      rss_before_kb: before.rssKb,
      rss_after_subscribe_kb: afterSub.rssKb,
      rss_end_kb: cpu1.rssKb,
      rss_per_1000_conns_kb: cfg.sockets ? Math.round(((afterSub.rssKb - before.rssKb) / cfg.sockets) * 1000) : null,
    };
    if (!cfg.serverPid) out.server = { note: 'no serverPid given: CPU/RSS not measured' };
    out.sockets = {
      unexpected_closes: S((s) => s.unexpectedCloses),
      close_codes: closeCodes,
      close_sample: reps.map((r) => r.st.closeSample).find(Boolean) || null,
      error_frames: S((s) => s.errorFrames),
      error_sample: reps.map((r) => r.st.errorSample).find(Boolean) || null,
      complete_frames: S((s) => s.completeFrames),
      other_next: S((s) => s.otherNext),
      pings_answered: S((s) => s.pings),
    };
    out.shape = {
      checked: S((s) => s.shapeChecked),
      errors: S((s) => s.shapeErrors),
      sample: reps.map((r) => r.st.shapeSample).find(Boolean) || null,
    };
    const workerPct = meas.map((m) => (100 * m.cpuUs) / m.wallUs);
    const masterWall = (cpu1.t - cpu0.t) || 1;
    out.loadgen = {
      procs: cfg.procs,
      worker_cpu_pct: +Math.max(...workerPct).toFixed(1),
      worker_cpu_pct_all: workerPct.map((p) => +p.toFixed(1)),
      master_cpu_pct: +((100 * (masterCpuM.user + masterCpuM.system)) / masterWall).toFixed(1),
      eld_p99_ms: +Math.max(...meas.map((m) => m.eldP99Ms || 0)).toFixed(1),
      eld_max_ms: +Math.max(...meas.map((m) => m.eldMaxMs || 0)).toFixed(1),
      cpu_us_per_delivery: unique ? +((sum(meas, (m) => m.cpuUs) + masterCpuM.user + masterCpuM.system) / unique).toFixed(3) : null,
    };
    out.loadgen.saturated = out.loadgen.worker_cpu_pct >= 85;

    const D = out.deliveries;
    const reorderMatters = cfg.inflight === 1; // one request at a time: send order == server order
    out.ok = D.lost === 0 && D.dup === 0 && D.order_mismatch_sockets === 0 && !(reorderMatters && D.reorder) &&
      mutErrors === 0 && out.shape.errors === 0;
    if (!out.ok) {
      const why = [];
      if (D.lost) why.push(`${D.lost} deliveries lost`);
      if (D.dup) why.push(`${D.dup} duplicate deliveries`);
      if (D.order_mismatch_sockets) why.push(`${D.order_mismatch_sockets} sockets saw another order than the rest`);
      if (reorderMatters && D.reorder) why.push(`${D.reorder} deliveries out of send order`);
      if (mutErrors) why.push(`${mutErrors} mutation errors (${mutErrorSample})`);
      if (out.shape.errors) why.push(`message shape: ${out.shape.sample}`);
      out.error = why.join('; ');
    }
    out.phase = 'done';
    out.total_s = +((nowUs() - t0) / 1e6).toFixed(2);
    log(`${cfg.label}: ${unique}/${expected} deliveries in ${out.phase_s}s -> ${out.deliveries_per_s}/s, p99 ${out.latency_ms.p99} ms`);
    await withTimeout(allCall(workers, 'close'), 5000, 'close').catch(() => {});
  } catch (e) {
    out.error = `${out.phase}: ${e.message}`;
    log(out.error);
  }
  clearTimeout(deadline);
  process.stdout.write(`${JSON.stringify(out)}\n`);
  for (const w of workers) if (w.child.exitCode === null) w.child.kill('SIGKILL');
  process.exit(out.error && !out.deliveries ? 2 : 0);
}

if (IS_WORKER()) workerMain();
else masterMain();
