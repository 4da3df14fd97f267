// Apollo Client 4 (HttpLink + InMemoryCache) against a running Parley, as an app uses it.
//
//   node http_apollo.mjs flow <graphql url>       register, login, authenticated reads,
//                                                 error codes, 400/413 refusals, GET queries
//   node http_apollo.mjs ratelimit <graphql url>  requests until the server answers 429
// Env (flow): PARLEY_USERNAME, PARLEY_PASSWORD.
// Prints one JSON line: per step, what Apollo returned or threw and what went on the wire.
import {
  ApolloClient, ApolloLink, CombinedGraphQLErrors, HttpLink, InMemoryCache, ServerError, gql,
} from "@apollo/client";
import { SetContextLink } from "@apollo/client/link/context";

import { describeError, makeRecorder, requireArg } from "./http_recorder.mjs";

const [mode, uri] = [process.argv[2], requireArg(process.argv[3], "graphql url")];
const errorClasses = { CombinedGraphQLErrors, ServerError };

const REGISTER = gql`
  mutation Register($input: RegisterInput!) {
    register(input: $input) { accessToken user { id username displayName } }
  }
`;
const LOGIN = gql`
  mutation Login($input: LoginInput!) {
    login(input: $input) { accessToken refreshToken user { id username } session { id current } }
  }
`;
const CREATE_GROUP = gql`
  mutation CreateGroup($input: CreateGroupInput!) {
    createGroup(input: $input) { id name viewerRole conversation { id } }
  }
`;
const SEND = gql`
  mutation Send($input: SendMessageInput!) {
    sendMessage(input: $input) { id body clientMessageId sender { username } }
  }
`;
const OVERVIEW = gql`
  query Overview($username: String!) {
    me { id username displayName }
    users(query: $username, first: 5) { edges { node { id username } } }
    conversations(first: 10) {
      edges { node { id kind title lastMessage { body sender { username } } } }
      pageInfo { hasNextPage }
    }
  }
`;
const ME = gql`
  query Me { me { id username } }
`;
const INVALID = gql`
  query Invalid { me { id noSuchField } }
`;
const SEARCH_USERS = gql`
  query SearchUsers($q: String) { users(query: $q) { edges { node { id } } } }
`;
const TYPENAME = gql`
  query Ping { __typename }
`;

async function attempt(fn) {
  try {
    return { ok: true, data: (await fn()).data };
  } catch (error) {
    return { ok: false, error: describeError(error, errorClasses) };
  }
}

function step(result, recorder) {
  return { ...result, wire: recorder.last() };
}

async function flow() {
  const username = requireArg(process.env.PARLEY_USERNAME, "PARLEY_USERNAME");
  const password = requireArg(process.env.PARLEY_PASSWORD, "PARLEY_PASSWORD");
  const recorder = makeRecorder();
  const out = {};

  // Anonymous client: register and log in.
  const anon = new ApolloClient({
    link: new HttpLink({ uri, fetch: recorder.fetch }),
    cache: new InMemoryCache(),
  });
  const displayName = "Apollo Tester";
  const registered = await attempt(() =>
    anon.mutate({ mutation: REGISTER, variables: { input: { username, password, displayName } } }));
  out.register = step(registered, recorder);
  const loggedIn = await attempt(() =>
    anon.mutate({ mutation: LOGIN, variables: { input: { username, password } } }));
  out.login = step(loggedIn, recorder);
  let token = loggedIn.ok ? loggedIn.data.login.accessToken : "missing";

  // The usual authenticated client: a context link adds the Authorization header.
  const authLink = new SetContextLink((prev) => ({
    headers: { ...prev.headers, authorization: `Bearer ${token}` },
  }));
  const authed = new ApolloClient({
    link: ApolloLink.from([authLink, new HttpLink({ uri, fetch: recorder.fetch })]),
    cache: new InMemoryCache(),
  });
  const group = await attempt(() =>
    authed.mutate({ mutation: CREATE_GROUP, variables: { input: { name: `${username} team` } } }));
  out.createGroup = step(group, recorder);
  const conversationId = group.ok ? group.data.createGroup.conversation.id : "missing";
  out.sendMessage = step(await attempt(() =>
    authed.mutate({
      mutation: SEND,
      variables: { input: { conversationId, body: "hello from Apollo", clientMessageId: "apollo-1" } },
    })), recorder);
  out.overview = step(await attempt(() =>
    authed.query({ query: OVERVIEW, variables: { username }, fetchPolicy: "network-only" })), recorder);

  // Errors as Apollo 4 surfaces them.
  out.wrongPassword = step(await attempt(() =>
    anon.mutate({ mutation: LOGIN, variables: { input: { username, password: `${password}-wrong` } } })), recorder);
  out.unauthenticated = step(await attempt(() =>
    anon.query({ query: ME, fetchPolicy: "network-only" })), recorder);
  out.invalidDocument = step(await attempt(() =>
    authed.query({ query: INVALID, fetchPolicy: "network-only" })), recorder);
  out.oversized = step(await attempt(() =>
    authed.query({ query: SEARCH_USERS, variables: { q: "x".repeat(1024 * 1024 + 1) }, fetchPolicy: "network-only" })),
  recorder);

  // Queries over GET, as `useGETForQueries` sends them; mutations stay POST.
  const getter = new ApolloClient({
    link: ApolloLink.from([authLink, new HttpLink({ uri, fetch: recorder.fetch, useGETForQueries: true })]),
    cache: new InMemoryCache(),
  });
  out.getQuery = step(await attempt(() => getter.query({ query: ME, fetchPolicy: "network-only" })), recorder);
  out.getClientMutation = step(await attempt(() =>
    getter.mutate({ mutation: SEND, variables: { input: { conversationId, body: "sent by the GET client" } } })),
  recorder);

  // A token that is garbage: UNAUTHENTICATED, still a readable GraphQL error.
  token = "not-a-token";
  out.badToken = step(await attempt(() => authed.query({ query: ME, fetchPolicy: "network-only" })), recorder);
  return out;
}

async function ratelimit() {
  const recorder = makeRecorder();
  const client = new ApolloClient({
    link: new HttpLink({ uri, fetch: recorder.fetch }),
    cache: new InMemoryCache(),
  });
  const statuses = [];
  let refused = null;
  for (let i = 0; i < 50 && refused === null; i++) {
    const result = await attempt(() => client.query({ query: TYPENAME, fetchPolicy: "no-cache" }));
    statuses.push(recorder.last().status);
    if (!result.ok) refused = step(result, recorder);
  }
  return { statuses, refused };
}

const scenarios = { flow, ratelimit };
if (!(mode in scenarios)) requireArg(null, `mode (${Object.keys(scenarios).join("|")})`);
console.log(JSON.stringify(await scenarios[mode]()));
