// Shared helpers for the benchmark peers (bench/peers/*). Node >= 20, no deps.
//
// Both peers build the SAME MessageEvent shape as Parley's contract
// (/work/shared/api/schema.graphql): the floor serialises it once per event,
// the graphql-ws peer lets graphql-js execute the subscription's selection set
// on it for every subscriber.
import { randomUUID } from 'node:crypto';

export const HOST = process.env.HOST || '127.0.0.1';
export const PORT = Number(process.env.PORT || 0);
export const MAX_BODY = 1024 * 1024; // 1 MiB, the contract's request-body limit

/** Read a request body (bounded) and JSON.parse it. Resolves undefined on bad JSON. */
export function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(Object.assign(new Error('request body too large'), { status: 413 }));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch {
        resolve(undefined);
      }
    });
    req.on('error', reject);
  });
}

export function sendJson(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
  });
  res.end(body);
}

/** "Bearer <t>", "<t>" -> "<t>" (the contract accepts both, and both key spellings). */
export function bearer(value) {
  if (typeof value !== 'string' || value === '') return null;
  return value.startsWith('Bearer ') ? value.slice(7) : value;
}

let cursorSeq = 0;

/**
 * A MessageEvent value (kind, message, cursor) for a newly sent message, with
 * every field of the contract's Message the benchmark selects.
 */
export function newMessageEvent({ conversation, sender, body, clientMessageId }) {
  cursorSeq += 1;
  const message = {
    id: randomUUID(),
    conversation, // { id, kind, title }
    sender, // { id, username, displayName }
    body,
    clientMessageId: clientMessageId ?? null,
    createdAt: new Date().toISOString(),
    editedAt: null,
    deletedAt: null,
    isDeleted: false,
    editHistory: [],
    attachments: [],
    mentions: [],
  };
  const cursor = Buffer.from(`${conversation.id}:${cursorSeq}`).toString('base64url');
  return { kind: 'ADDED', message, cursor };
}

/** Log the bound address in a form bench/run.py (and humans) can read. */
export function announce(name, server) {
  const addr = server.address();
  process.stdout.write(`${name} listening on http://${addr.address}:${addr.port}/graphql pid=${process.pid}\n`);
}

/** Exit cleanly on SIGTERM/SIGINT (run.py stops peers with SIGTERM). */
export function exitOnSignals(closeAll) {
  const stop = () => {
    try {
      closeAll();
    } finally {
      setTimeout(() => process.exit(0), 200).unref();
    }
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
