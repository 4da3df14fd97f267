// urql 6 (@urql/core Client + fetchExchange, default options) against a running Parley.
//
//   node http_urql.mjs <graphql url>
// Env: PARLEY_USERNAME, PARLEY_PASSWORD.
// urql's default `preferGetMethod: "within-url-limit"` sends queries whose URL fits in
// 2048 characters as GET and longer ones as POST; mutations always go as POST.
// Prints one JSON line: per step, data, error codes and what went on the wire.
import { Client, fetchExchange, gql } from "@urql/core";

import { makeRecorder, requireArg } from "./http_recorder.mjs";

const url = requireArg(process.argv[2], "graphql url");
const username = requireArg(process.env.PARLEY_USERNAME, "PARLEY_USERNAME");
const password = requireArg(process.env.PARLEY_PASSWORD, "PARLEY_PASSWORD");

const REGISTER = gql`
  mutation Register($input: RegisterInput!) {
    register(input: $input) { accessToken user { id username } }
  }
`;
const LOGIN = gql`
  mutation Login($input: LoginInput!) {
    login(input: $input) { accessToken user { id username } }
  }
`;
const ME = gql`
  query Me { me { id username displayName } }
`;
const USERS = gql`
  query Users($q: String, $first: Int) { users(query: $q, first: $first) { edges { node { id username } } } }
`;
const UPDATE_PROFILE = gql`
  mutation UpdateProfile($input: UpdateProfileInput!) { updateProfile(input: $input) { id displayName } }
`;
// 25 aliased copies of one selection, with long alias names: far too long for a
// 2048-character URL however urql prints the document.
const LONG_ALIASES = Array.from({ length: 25 }, (_, i) => `me_${"x".repeat(80)}_${i}`);
const LONG = gql(`query Long { ${LONG_ALIASES.map((a) => `${a}: me { id username displayName }`).join(" ")} }`);
const INVALID = gql`
  query Invalid { me { id noSuchField } }
`;

const recorder = makeRecorder();
let token = null;
const client = new Client({
  url,
  exchanges: [fetchExchange],
  fetch: recorder.fetch,
  requestPolicy: "network-only",
  fetchOptions: () => (token ? { headers: { authorization: `Bearer ${token}` } } : {}),
});

function summarize(result) {
  const error = result.error;
  return {
    data: result.data ?? null,
    error: error
      ? {
        name: error.name,
        message: error.message,
        networkError: error.networkError ? String(error.networkError.message ?? error.networkError) : null,
        codes: error.graphQLErrors.map((e) => e.extensions?.code ?? null),
        extensions: error.graphQLErrors.map((e) => e.extensions ?? null),
        status: error.response?.status ?? null,
      }
      : null,
    wire: recorder.last(),
  };
}

const out = {};
out.register = summarize(await client.mutation(REGISTER, { input: { username, password } }).toPromise());
out.wrongPassword = summarize(
  await client.mutation(LOGIN, { input: { username, password: `${password}-wrong` } }).toPromise());
out.anonymousMe = summarize(await client.query(ME, {}).toPromise());
const login = await client.mutation(LOGIN, { input: { username, password } }).toPromise();
out.login = summarize(login);
token = login.data?.login?.accessToken ?? "missing";

out.me = summarize(await client.query(ME, {}).toPromise());
out.users = summarize(await client.query(USERS, { q: username, first: 5 }).toPromise());
out.updateProfile = summarize(
  await client.mutation(UPDATE_PROFILE, { input: { displayName: "Urql Tester" } }).toPromise());
out.meAfterUpdate = summarize(await client.query(ME, {}).toPromise());
// A query too long for a URL: urql falls back to POST by itself.
out.longQuery = summarize(await client.query(LONG, {}).toPromise());
// Errors over GET keep their codes.
out.badPageSize = summarize(await client.query(USERS, { q: username, first: 0 }).toPromise());
out.invalidDocument = summarize(await client.query(INVALID, {}).toPromise());
// A refused request (413) is still a readable GraphQL error for urql.
out.oversized = summarize(
  await client.mutation(UPDATE_PROFILE, { input: { displayName: "x".repeat(1024 * 1024 + 1) } }).toPromise());

console.log(JSON.stringify(out));
