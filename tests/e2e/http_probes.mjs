// Plain fetch probes of the contract's HTTP rules (what a browser's fetch sends).
//
//   node http_probes.mjs <server url> <allowed origin> <other origin>
// Prints one JSON line: { probeName: { status, headers: {...}, body } }.
import { requireArg } from "./http_recorder.mjs";

const base = requireArg(process.argv[2], "server url");
const allowedOrigin = requireArg(process.argv[3], "allowed origin");
const otherOrigin = requireArg(process.argv[4], "other origin");
const graphql = `${base}/graphql`;

const GRAPHQL_RESPONSE = "application/graphql-response+json";
const JSON_TYPE = "application/json";

async function probe(url, init = {}) {
  const response = await fetch(url, { redirect: "manual", ...init });
  const headers = {};
  response.headers.forEach((value, name) => {
    headers[name] = value;
  });
  const text = await response.text();
  let body = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: response.status, headers, body };
}

const post = (body, headers = {}) =>
  probe(graphql, {
    method: "POST",
    body: typeof body === "string" ? body : JSON.stringify(body),
    headers: { "content-type": JSON_TYPE, ...headers },
  });
const get = (params, headers = {}) => probe(`${graphql}?${new URLSearchParams(params)}`, { headers });
const preflight = (origin, requestHeaders) =>
  probe(graphql, {
    method: "OPTIONS",
    headers: {
      origin,
      "access-control-request-method": "POST",
      "access-control-request-headers": requestHeaders,
    },
  });

const out = {};
out.badJson = await post("{\"query\": ", { accept: GRAPHQL_RESPONSE });
out.badJsonPlainAccept = await post("{\"query\": ", { accept: JSON_TYPE });
out.noQuery = await post({ variables: {} }, { accept: GRAPHQL_RESPONSE });
out.emptyQuery = await post({ query: "   " }, { accept: GRAPHQL_RESPONSE });
out.notAnObject = await post("\"{ __typename }\"", { accept: GRAPHQL_RESPONSE });
out.batch = await post([{ query: "{ __typename }" }], { accept: GRAPHQL_RESPONSE });
out.getNoQuery = await get({}, { accept: GRAPHQL_RESPONSE });
out.getMutation = await get({ query: "mutation { logout }" }, { accept: GRAPHQL_RESPONSE });
out.getMutationPlainAccept = await get({ query: "mutation Out { logout }" }, { accept: JSON_TYPE });
out.getQuery = await get({ query: "query Ping { __typename }", operationName: "Ping", variables: "{}" },
  { accept: GRAPHQL_RESPONSE });
out.postGraphqlResponse = await post({ query: "{ __typename }" }, { accept: GRAPHQL_RESPONSE });
out.postJson = await post({ query: "{ __typename }" }, { accept: JSON_TYPE });
out.postNoAccept = await post({ query: "{ __typename }" });
out.postBothAccepted = await post({ query: "{ __typename }" },
  { accept: `${GRAPHQL_RESPONSE}, ${JSON_TYPE};q=0.9` });
out.invalidGraphqlResponse = await post({ query: "{ nope }" }, { accept: GRAPHQL_RESPONSE });
out.invalidJson = await post({ query: "{ nope }" }, { accept: JSON_TYPE });
out.parseError = await post({ query: "{ me { " }, { accept: GRAPHQL_RESPONSE });

const wanted = "authorization,content-type,apollo-require-preflight";
out.preflightAllowed = await preflight(allowedOrigin, wanted);
out.preflightOther = await preflight(otherOrigin, wanted);
out.corsAllowed = await post({ query: "{ __typename }" }, { origin: allowedOrigin, accept: GRAPHQL_RESPONSE });
out.corsOther = await post({ query: "{ __typename }" }, { origin: otherOrigin, accept: GRAPHQL_RESPONSE });
out.corsAllowedRefusal = await post("{", { origin: allowedOrigin, accept: GRAPHQL_RESPONSE });
out.healthz = await probe(`${base}/healthz`);

console.log(JSON.stringify(out));
