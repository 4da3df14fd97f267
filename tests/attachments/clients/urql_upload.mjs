// uploadAttachment with @urql/core's built-in multipart support, as the README shows it.
// Env: PARLEY_URL, PARLEY_TOKEN, PARLEY_CONVERSATION, PARLEY_PREFLIGHT ("1" to send the header).
// Prints one JSON line: { data, status, codes }.
const urqlPath = new URL("../../e2e/node_modules/@urql/core/dist/urql-core.mjs", import.meta.url);
const { Client, fetchExchange, gql } = await import(urqlPath.href);

const UPLOAD = gql`
  mutation Upload($conversationId: ID!, $file: Upload!) {
    uploadAttachment(conversationId: $conversationId, file: $file) { id filename contentType kind size url }
  }
`;

const headers = { authorization: `Bearer ${process.env.PARLEY_TOKEN}` };
if (process.env.PARLEY_PREFLIGHT === "1") headers["Apollo-Require-Preflight"] = "true";

const client = new Client({
  url: process.env.PARLEY_URL,
  exchanges: [fetchExchange],
  preferGetMethod: false,
  fetchOptions: { headers },
});

const file = new File([new TextEncoder().encode("hello from urql\n")], "../notes.txt", { type: "text/html" });
const result = await client
  .mutation(UPLOAD, { conversationId: process.env.PARLEY_CONVERSATION, file })
  .toPromise();
const error = result.error;
console.log(JSON.stringify({
  data: result.data ?? null,
  status: error?.response?.status ?? null,
  codes: (error?.graphQLErrors ?? []).map((e) => e.extensions?.code ?? null),
}));
