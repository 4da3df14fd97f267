// A fetch that records what a client library puts on the wire and what comes back,
// without changing either: pass `recorder.fetch` as the library's `fetch` option.
// Shared by the http_*.mjs scripts.

const HEADER_NAMES = [
  "accept", "content-type", "authorization", "apollo-require-preflight", "x-apollo-operation-name",
];

function plainHeaders(headers) {
  const out = {};
  new Headers(headers ?? {}).forEach((value, name) => {
    out[name.toLowerCase()] = value;
  });
  return out;
}

function bodyKind(body) {
  if (body == null) return null;
  if (typeof body === "string") return "string";
  if (typeof FormData !== "undefined" && body instanceof FormData) return "formdata";
  return typeof body;
}

export function makeRecorder() {
  const exchanges = [];
  async function recordingFetch(input, init = {}) {
    const url = new URL(typeof input === "string" ? input : input.url);
    const sent = plainHeaders(init.headers);
    const entry = {
      method: (init.method ?? "GET").toUpperCase(),
      path: url.pathname,
      queryParams: [...url.searchParams.keys()].sort(),
      urlLength: url.href.length,
      body: bodyKind(init.body),
      headers: Object.fromEntries(HEADER_NAMES.filter((n) => n in sent).map((n) => [n, sent[n]])),
    };
    if (entry.headers.authorization) entry.headers.authorization = entry.headers.authorization.replace(/ .+/, " <token>");
    exchanges.push(entry);
    const response = await fetch(input, init);
    entry.status = response.status;
    entry.contentType = response.headers.get("content-type");
    entry.retryAfter = response.headers.get("retry-after");
    return response;
  }
  return { fetch: recordingFetch, exchanges, last: () => exchanges[exchanges.length - 1] };
}

// What a caught client error tells its user: its class and the GraphQL error codes it exposes.
export function describeError(error, { CombinedGraphQLErrors, ServerError } = {}) {
  if (error == null) return null;
  const out = { name: error.constructor?.name ?? typeof error, message: String(error.message ?? error) };
  if (CombinedGraphQLErrors?.is?.(error) || Array.isArray(error.errors)) {
    out.codes = error.errors.map((e) => e.extensions?.code ?? null);
    out.extensions = error.errors.map((e) => e.extensions ?? null);
  }
  if (ServerError?.is?.(error)) {
    out.statusCode = error.statusCode;
  }
  return out;
}

export function requireArg(value, name) {
  if (!value) {
    console.error(`missing ${name}`);
    process.exit(2);
  }
  return value;
}
