// Floor: the least work a server can do for a fan-out over WebSockets.
//
// Plain `ws` (permessage-deflate off). It speaks just enough graphql-transport-ws:
//   connection_init -> connection_ack (token check: any non-empty "authorization")
//   subscribe       -> remember (socket, subscription id) under the conversation id
//   ping            -> pong;  complete -> forget
// POST /graphql with a sendMessage-shaped body ({variables:{input:{conversationId,
// body, clientMessageId}}}) triggers one event: it builds the same MessageEvent value
// as the peers, serialises ONE `next` frame (per distinct subscription id; the load
// generator uses "1" everywhere, so one frame) into a Buffer, and writes that same
// Buffer to every subscribed socket. No GraphQL parsing, validation or execution.
//
// Env: HOST (default 127.0.0.1), PORT (default 0).
// Run:  node bench/peers/ws-floor/server.mjs
import http from 'node:http';
import { WebSocketServer } from 'ws';
import { HOST, PORT, readJson, sendJson, bearer, newMessageEvent, announce, exitOnSignals } from '../common.mjs';

/** conversationId -> Map<WebSocket, subscriptionId> */
const subscribers = new Map();
const SEND_OPTS = { binary: false, compress: false };

function unsubscribe(ws) {
  for (const subs of subscribers.values()) subs.delete(ws);
}

const server = http.createServer(async (req, res) => {
  const path = (req.url || '/').split('?')[0];
  if (path === '/health') return sendJson(res, 200, { ok: true });
  if (req.method !== 'POST' || (path !== '/graphql' && path !== '/event')) {
    return sendJson(res, 404, { error: 'POST /graphql or /event' });
  }
  let body;
  try {
    body = await readJson(req);
  } catch (e) {
    return sendJson(res, e.status || 400, { error: e.message });
  }
  const input = body?.variables?.input ?? body?.input ?? body;
  if (!input || typeof input.conversationId !== 'string') {
    return sendJson(res, 400, { errors: [{ message: 'need variables.input.conversationId' }] });
  }
  const token = bearer(req.headers.authorization) || 'anonymous';
  const event = newMessageEvent({
    conversation: { id: input.conversationId, kind: 'GROUP', title: 'floor' },
    sender: { id: `u-${token.slice(-12)}`, username: 'floor', displayName: 'Floor Sender' },
    body: String(input.body ?? ''),
    clientMessageId: input.clientMessageId,
  });
  const subs = subscribers.get(input.conversationId);
  let delivered = 0;
  if (subs && subs.size) {
    const data = JSON.stringify({ data: { messageEvents: event } });
    const frames = new Map(); // subscription id -> pre-serialised Buffer
    for (const [ws, id] of subs) {
      let frame = frames.get(id);
      if (!frame) {
        frame = Buffer.from(`{"id":${JSON.stringify(id)},"type":"next","payload":${data}}`);
        frames.set(id, frame);
      }
      if (ws.readyState === 1) {
        ws.send(frame, SEND_OPTS);
        delivered += 1;
      }
    }
  }
  sendJson(res, 200, { data: { sendMessage: { id: event.message.id, clientMessageId: event.message.clientMessageId, createdAt: event.message.createdAt } }, extensions: { delivered } });
});

const wss = new WebSocketServer({
  server,
  path: '/graphql',
  perMessageDeflate: false,
  handleProtocols: (protocols) => (protocols.has('graphql-transport-ws') ? 'graphql-transport-ws' : false),
});

wss.on('connection', (ws) => {
  let acked = false;
  const initTimer = setTimeout(() => ws.close(4408, 'Connection initialisation timeout'), 10_000);
  ws.on('message', (raw) => {
    let msg;
    try {
      msg = JSON.parse(raw.toString());
    } catch {
      return ws.close(4400, 'Invalid message received');
    }
    switch (msg.type) {
      case 'connection_init': {
        clearTimeout(initTimer);
        if (acked) return ws.close(4429, 'Too many initialisation requests');
        const p = msg.payload || {};
        if (!bearer(p.authorization ?? p.Authorization)) return ws.close(4403, 'invalid token');
        acked = true;
        return ws.send('{"type":"connection_ack"}');
      }
      case 'subscribe': {
        if (!acked) return ws.close(4401, 'Unauthorized');
        const v = msg.payload?.variables || {};
        const conv = String(v.c ?? v.conversationId ?? Object.values(v)[0] ?? '');
        let subs = subscribers.get(conv);
        if (!subs) subscribers.set(conv, (subs = new Map()));
        subs.set(ws, String(msg.id));
        return undefined;
      }
      case 'complete':
        return unsubscribe(ws);
      case 'ping':
        return ws.send('{"type":"pong"}');
      default:
        return undefined;
    }
  });
  ws.on('close', () => {
    clearTimeout(initTimer);
    unsubscribe(ws);
  });
  ws.on('error', () => {});
});

server.listen(PORT, HOST, () => announce('ws floor', server));
exitOnSignals(() => {
  for (const c of wss.clients) c.terminate();
  server.close();
});
