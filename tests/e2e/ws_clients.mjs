// Real frontend client libraries against a running Parley (driven by tests/realtime/test_ws_e2e.py).
//
//   node ws_clients.mjs <scenario> '<json args>'
//
// Prints one JSON object per line on stdout: {"at": "<step>", ...}. Scenarios:
//   graphql-ws         graphql-transport-ws via the `graphql-ws` client (what Apollo's
//                      GraphQLWsLink and urql use): a query over the socket, a refused
//                      subscription, then `count` messageEvents; args {url, token,
//                      conversationId, foreignConversationId, count}
//   graphql-ws-reject  a bad token: the close code and reason; args {url, token}
//   apollo             Apollo Client 4 + GraphQLWsLink: `count` messageEvents; args as graphql-ws
//   legacy             the legacy `graphql-ws` subprotocol via subscriptions-transport-ws
//                      (Apollo's deprecated WebSocketLink): `count` messageEvents
//   legacy-reject      the legacy client with a bad token
import WebSocket from 'ws';
import { createClient } from 'graphql-ws';

const [scenario, raw] = process.argv.slice(2);
const args = JSON.parse(raw || '{}');
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const fail = (err) => {
  out({ at: 'failed', error: String(err && (err.stack || err.message || err)) });
  process.exit(1);
};
setTimeout(() => fail('timed out'), 20000).unref();

const EVENTS = `subscription($c: ID!) { messageEvents(conversationId: $c) { kind cursor message { body sender { username } } } }`;
const ME = `query { me { username } }`;

function graphqlWsClient(token) {
  return createClient({
    url: args.url,
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${token}` },
    retryAttempts: 0,
    shouldRetry: () => false,
    lazy: true,
  });
}

async function graphqlWs() {
  const client = graphqlWsClient(args.token);
  // a query over the socket
  const me = await new Promise((resolve, reject) => {
    let result;
    client.subscribe({ query: ME }, { next: (r) => (result = r), error: reject, complete: () => resolve(result) });
  });
  out({ at: 'query', result: me });
  // a refused subscription: an `error` message with the code, the socket stays
  const refused = await new Promise((resolve) => {
    client.subscribe(
      { query: EVENTS, variables: { c: args.foreignConversationId } },
      { next: () => resolve({ unexpected: true }), error: (errors) => resolve(errors), complete: () => resolve(null) },
    );
  });
  out({ at: 'refused', errors: refused });
  // live events
  let seen = 0;
  await new Promise((resolve, reject) => {
    const dispose = client.subscribe(
      { query: EVENTS, variables: { c: args.conversationId } },
      {
        next: (r) => {
          out({ at: 'event', result: r });
          if (++seen === args.count) {
            dispose();
            resolve();
          }
        },
        error: reject,
        complete: resolve,
      },
    );
    out({ at: 'subscribed' });
  });
  await client.dispose();
}

async function graphqlWsReject() {
  const client = graphqlWsClient(args.token);
  const closed = await new Promise((resolve) => {
    client.on('closed', (event) => resolve({ code: event.code, reason: event.reason }));
    client.subscribe({ query: ME }, { next: () => {}, error: () => {}, complete: () => {} });
  });
  out({ at: 'closed', ...closed });
  await client.dispose();
}

async function apollo() {
  const { ApolloClient, InMemoryCache, gql } = await import('@apollo/client/core');
  const { GraphQLWsLink } = await import('@apollo/client/link/subscriptions');
  const wsClient = graphqlWsClient(args.token);
  const client = new ApolloClient({ link: new GraphQLWsLink(wsClient), cache: new InMemoryCache() });
  let seen = 0;
  await new Promise((resolve, reject) => {
    const sub = client
      .subscribe({ query: gql(EVENTS), variables: { c: args.conversationId } })
      .subscribe({
        next: (r) => {
          out({ at: 'event', result: { data: r.data } });
          if (++seen === args.count) {
            sub.unsubscribe();
            resolve();
          }
        },
        error: reject,
      });
    out({ at: 'subscribed' });
  });
  await wsClient.dispose();
  client.stop();
}

async function legacyClient(token) {
  const { SubscriptionClient } = await import('subscriptions-transport-ws');
  return new SubscriptionClient(
    args.url,
    { connectionParams: { authorization: `Bearer ${token}` }, reconnect: false, lazy: true },
    WebSocket,
  );
}

async function legacy() {
  const client = await legacyClient(args.token);
  let seen = 0;
  await new Promise((resolve, reject) => {
    const sub = client.request({ query: EVENTS, variables: { c: args.conversationId } }).subscribe({
      next: (r) => {
        out({ at: 'event', result: r });
        if (++seen === args.count) {
          sub.unsubscribe();
          resolve();
        }
      },
      error: (e) => reject(new Error(JSON.stringify(e))),
    });
    out({ at: 'subscribed' });
  });
  client.close();
}

async function legacyReject() {
  const { SubscriptionClient } = await import('subscriptions-transport-ws');
  const result = {};
  await new Promise((resolve) => {
    const client = new SubscriptionClient(
      args.url,
      {
        connectionParams: { authorization: `Bearer ${args.token}` },
        reconnect: false,
        connectionCallback: (error) => {
          result.connectionError = error;
        },
      },
      WebSocket,
    );
    client.client.addEventListener('close', (event) => {
      result.code = event.code;
      result.reason = event.reason;
      setTimeout(resolve, 20);
    });
  });
  out({ at: 'rejected', ...result });
}

const scenarios = {
  'graphql-ws': graphqlWs,
  'graphql-ws-reject': graphqlWsReject,
  apollo,
  legacy,
  'legacy-reject': legacyReject,
};
if (!scenarios[scenario]) fail(`unknown scenario ${scenario}`);
scenarios[scenario]().then(() => process.exit(0), fail);
