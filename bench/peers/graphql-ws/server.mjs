// Reference peer: the "as the docs show it" Node stack for GraphQL subscriptions.
//
//   graphql-js (buildSchema + resolvers) + graphql-ws `useServer` on a `ws`
//   WebSocketServer + graphql-subscriptions' in-memory PubSub,
//   and a plain node:http POST /graphql endpoint for queries and mutations.
//
// It implements the subset of Parley's contract (/work/shared/api/schema.graphql)
// that the fan-out benchmark uses, with the same Message / MessageEvent shape:
//   register, createGroup, addGroupMembers, sendMessage, messageEvents.
// Auth is deliberately trivial (an in-memory token -> user map, no hashing, no JWT):
// the token is checked in connection_init (ws) and in the Authorization header (HTTP).
// Membership is checked on subscribe and send, as Parley must.
//
// Env: HOST (default 127.0.0.1), PORT (default 0 = any free port).
// Run:  node bench/peers/graphql-ws/server.mjs
import http from 'node:http';
import { randomBytes, randomUUID } from 'node:crypto';
import { buildSchema, graphql, GraphQLError } from 'graphql';
import { WebSocketServer } from 'ws';
import { useServer } from 'graphql-ws/use/ws';
import { PubSub } from 'graphql-subscriptions';
import { HOST, PORT, readJson, sendJson, bearer, newMessageEvent, announce, exitOnSignals } from '../common.mjs';

const typeDefs = /* GraphQL */ `
  scalar DateTime

  enum ConversationKind { DIRECT GROUP }
  enum GroupVisibility { PUBLIC PRIVATE }
  enum MessageEventKind { ADDED EDITED DELETED }

  type User { id: ID! username: String! displayName: String! }
  type Conversation { id: ID! kind: ConversationKind! title: String! }
  type Group {
    id: ID!
    name: String!
    visibility: GroupVisibility!
    memberCount: Int!
    conversation: Conversation
  }
  type MessageEdit { body: String! editedAt: DateTime! }
  type Attachment { id: ID! filename: String! }
  type Message {
    id: ID!
    conversation: Conversation!
    sender: User!
    body: String
    clientMessageId: String
    createdAt: DateTime!
    editedAt: DateTime
    deletedAt: DateTime
    isDeleted: Boolean!
    editHistory: [MessageEdit!]!
    attachments: [Attachment!]!
    mentions: [User!]!
  }
  type MessageEvent { kind: MessageEventKind! message: Message! cursor: String! }
  type AuthPayload { accessToken: String! user: User! }

  input RegisterInput { username: String! password: String! displayName: String }
  input CreateGroupInput {
    name: String!
    description: String
    visibility: GroupVisibility = PRIVATE
    memberIds: [ID!]
  }
  input SendMessageInput {
    conversationId: ID!
    body: String!
    clientMessageId: String
    attachmentIds: [ID!]
  }

  type Query { me: User! }
  type Mutation {
    register(input: RegisterInput!): AuthPayload!
    createGroup(input: CreateGroupInput!): Group!
    addGroupMembers(groupId: ID!, userIds: [ID!]!): Group!
    sendMessage(input: SendMessageInput!): Message!
  }
  type Subscription {
    messageEvents(conversationId: ID!, after: String): MessageEvent!
  }
`;

// ------------------------------------------------------------------ state (in memory)
const usersById = new Map(); // id -> { id, username, displayName }
const usersByName = new Map();
const tokens = new Map(); // accessToken -> user
const groups = new Map(); // id -> { id, name, visibility, ownerId, members:Set, conversation }
const conversations = new Map(); // id -> { conv: {id, kind, title}, members:Set }
const pubsub = new PubSub();
const topic = (conversationId) => `messageEvents:${conversationId}`;

function err(message, code, extra = {}) {
  return new GraphQLError(message, { extensions: { code, ...extra } });
}
function viewer(ctx) {
  if (!ctx?.user) throw err('not authenticated', 'UNAUTHENTICATED');
  return ctx.user;
}

const resolvers = {
  Query: {
    me: (_s, _a, ctx) => viewer(ctx),
  },
  Mutation: {
    register: (_s, { input }) => {
      if (usersByName.has(input.username)) throw err('username taken', 'CONFLICT', { field: 'username' });
      const user = { id: randomUUID(), username: input.username, displayName: input.displayName || input.username };
      usersById.set(user.id, user);
      usersByName.set(user.username, user);
      const accessToken = randomBytes(24).toString('base64url');
      tokens.set(accessToken, user);
      return { accessToken, user };
    },
    createGroup: (_s, { input }, ctx) => {
      const me = viewer(ctx);
      const ids = input.memberIds || [];
      if (ids.length > 1000) throw err('too many user ids', 'BAD_USER_INPUT', { field: 'memberIds' });
      for (const id of ids) if (!usersById.has(id)) throw err('unknown user', 'NOT_FOUND');
      const members = new Set([me.id, ...ids]);
      const conv = { id: randomUUID(), kind: 'GROUP', title: input.name };
      const group = { id: randomUUID(), name: input.name, visibility: input.visibility, ownerId: me.id, members, conversation: conv };
      groups.set(group.id, group);
      conversations.set(conv.id, { conv, members });
      return groupView(group, me);
    },
    addGroupMembers: (_s, { groupId, userIds }, ctx) => {
      const me = viewer(ctx);
      const group = groups.get(groupId);
      if (!group || !group.members.has(me.id)) throw err('group not found', 'NOT_FOUND');
      if (group.ownerId !== me.id) throw err('owner only', 'FORBIDDEN');
      if (userIds.length > 1000) throw err('too many user ids', 'BAD_USER_INPUT', { field: 'userIds' });
      for (const id of userIds) if (!usersById.has(id)) throw err('unknown user', 'NOT_FOUND');
      for (const id of userIds) group.members.add(id);
      return groupView(group, me);
    },
    sendMessage: (_s, { input }, ctx) => {
      const me = viewer(ctx);
      const c = conversations.get(input.conversationId);
      if (!c || !c.members.has(me.id)) throw err('conversation not found', 'NOT_FOUND');
      const event = newMessageEvent({ conversation: c.conv, sender: me, body: input.body, clientMessageId: input.clientMessageId });
      pubsub.publish(topic(c.conv.id), { messageEvents: event });
      return event.message;
    },
  },
  Message: {
    // Like Parley: the idempotency key is echoed to its sender only.
    clientMessageId: (m, _a, ctx) => (ctx?.user && m.sender.id === ctx.user.id ? m.clientMessageId : null),
  },
  Subscription: {
    messageEvents: {
      subscribe: (_s, { conversationId }, ctx) => {
        const me = viewer(ctx);
        const c = conversations.get(conversationId);
        if (!c || !c.members.has(me.id)) throw err('conversation not found', 'NOT_FOUND');
        return pubsub.asyncIterableIterator(topic(conversationId));
      },
    },
  },
};

function groupView(group, me) {
  return {
    id: group.id,
    name: group.name,
    visibility: group.visibility,
    memberCount: group.members.size,
    conversation: group.members.has(me.id) ? group.conversation : null,
  };
}

// buildSchema + attach resolvers (what graphql-tools' makeExecutableSchema does, minus the dep).
const schema = buildSchema(typeDefs);
for (const [typeName, fields] of Object.entries(resolvers)) {
  const type = schema.getType(typeName);
  for (const [fieldName, r] of Object.entries(fields)) {
    const field = type.getFields()[fieldName];
    if (typeof r === 'function') field.resolve = r;
    else Object.assign(field, r);
  }
}

// ------------------------------------------------------------------ HTTP: POST /graphql
const server = http.createServer(async (req, res) => {
  const path = (req.url || '/').split('?')[0];
  if (path === '/health') return sendJson(res, 200, { ok: true });
  if (path !== '/graphql') return sendJson(res, 404, { error: 'not found' });
  if (req.method !== 'POST') return sendJson(res, 405, { error: 'POST only' });
  let body;
  try {
    body = await readJson(req);
  } catch (e) {
    return sendJson(res, e.status || 400, { errors: [{ message: e.message }] });
  }
  if (!body || typeof body.query !== 'string') {
    return sendJson(res, 400, { errors: [{ message: 'no GraphQL request' }] });
  }
  const token = bearer(req.headers.authorization);
  const user = token ? tokens.get(token) : undefined;
  if (token && !user) {
    return sendJson(res, 200, { errors: [{ message: 'invalid token', extensions: { code: 'UNAUTHENTICATED' } }] });
  }
  const result = await graphql({
    schema,
    source: body.query,
    variableValues: body.variables,
    operationName: body.operationName,
    contextValue: { user },
  });
  sendJson(res, 200, result);
});

// ------------------------------------------------------------------ WS: graphql-ws useServer
const wss = new WebSocketServer({ server, path: '/graphql' }); // ws default: permessage-deflate off
useServer(
  {
    schema,
    connectionInitWaitTimeout: 10_000,
    // Trivial token check: unknown token -> return false -> close 4403 Forbidden.
    onConnect: (ctx) => {
      const p = ctx.connectionParams || {};
      const user = tokens.get(bearer(p.authorization ?? p.Authorization));
      if (!user) return false;
      ctx.extra.user = user;
      return true;
    },
    context: (ctx) => ({ user: ctx.extra.user }),
  },
  wss,
);

server.listen(PORT, HOST, () => announce('graphql-ws peer', server));
exitOnSignals(() => {
  for (const c of wss.clients) c.terminate();
  server.close();
});
