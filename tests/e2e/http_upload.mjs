// uploadAttachment with Apollo Client 4 + apollo-upload-client's UploadHttpLink (a GraphQL
// multipart request), then the signed download URL fetched with plain fetch.
//
//   node http_upload.mjs <graphql url>
// Env: PARLEY_USERNAME, PARLEY_PASSWORD, PARLEY_MAX_UPLOAD_BYTES (the server's limit).
// Neither Apollo nor apollo-upload-client adds a CSRF header by itself: the app sets
// `Apollo-Require-Preflight: true` as an ordinary link header.
// Prints one JSON line: per step, what Apollo returned or threw and what went on the wire.
import {
  ApolloClient, ApolloLink, CombinedGraphQLErrors, InMemoryCache, ServerError, gql,
} from "@apollo/client";
import { SetContextLink } from "@apollo/client/link/context";
import UploadHttpLink from "apollo-upload-client/UploadHttpLink.mjs";

import { describeError, makeRecorder, requireArg } from "./http_recorder.mjs";

const uri = requireArg(process.argv[2], "graphql url");
const username = requireArg(process.env.PARLEY_USERNAME, "PARLEY_USERNAME");
const password = requireArg(process.env.PARLEY_PASSWORD, "PARLEY_PASSWORD");
const maxUploadBytes = Number(requireArg(process.env.PARLEY_MAX_UPLOAD_BYTES, "PARLEY_MAX_UPLOAD_BYTES"));
const errorClasses = { CombinedGraphQLErrors, ServerError };

const REGISTER = gql`
  mutation Register($input: RegisterInput!) { register(input: $input) { accessToken } }
`;
const CREATE_GROUP = gql`
  mutation CreateGroup($input: CreateGroupInput!) { createGroup(input: $input) { conversation { id } } }
`;
const UPLOAD = gql`
  mutation Upload($conversationId: ID!, $file: Upload!) {
    uploadAttachment(conversationId: $conversationId, file: $file) {
      id filename contentType kind size url message { id }
    }
  }
`;
const SEND = gql`
  mutation Send($input: SendMessageInput!) {
    sendMessage(input: $input) { id body attachments { id filename contentType size url } }
  }
`;

const recorder = makeRecorder();
let token = null;
const authLink = new SetContextLink((prev) => ({
  headers: token ? { ...prev.headers, authorization: `Bearer ${token}` } : prev.headers,
}));

function client(headers) {
  return new ApolloClient({
    link: ApolloLink.from([authLink, new UploadHttpLink({ uri, fetch: recorder.fetch, headers })]),
    cache: new InMemoryCache(),
  });
}

async function step(fn) {
  try {
    return { ok: true, data: (await fn()).data, wire: recorder.last() };
  } catch (error) {
    return { ok: false, error: describeError(error, errorClasses), wire: recorder.last() };
  }
}

const CONTENT = "hello from apollo-upload-client\n";
const app = client({ "Apollo-Require-Preflight": "true" }); // as the README tells apps to
const bare = client(undefined); // an upload client as it comes: no CSRF header

const out = {};
const registered = await step(() =>
  app.mutate({ mutation: REGISTER, variables: { input: { username, password } } }));
token = registered.ok ? registered.data.register.accessToken : "missing";
const group = await step(() =>
  app.mutate({ mutation: CREATE_GROUP, variables: { input: { name: `${username} files` } } }));
const conversationId = group.ok ? group.data.createGroup.conversation.id : "missing";
out.setup = { registered: registered.ok, group: group.ok ? group.data : group.error };

const textFile = () => new File([CONTENT], "../../notes.txt", { type: "text/html" });
out.withoutHeader = await step(() =>
  bare.mutate({ mutation: UPLOAD, variables: { conversationId, file: textFile() } }));
out.tooLarge = await step(() =>
  app.mutate({
    mutation: UPLOAD,
    variables: { conversationId, file: new File([new Uint8Array(maxUploadBytes + 1)], "big.bin") },
  }));
out.upload = await step(() => app.mutate({ mutation: UPLOAD, variables: { conversationId, file: textFile() } }));
// X-Apollo-Operation-Name is the contract's other accepted CSRF header.
out.withOperationNameHeader = await step(() =>
  client({ "X-Apollo-Operation-Name": "Upload" }).mutate({
    mutation: UPLOAD, variables: { conversationId, file: new File(["second file\n"], "second.txt") },
  }));

const attachmentId = out.upload.ok ? out.upload.data.uploadAttachment.id : "missing";
out.send = await step(() =>
  app.mutate({
    mutation: SEND,
    variables: { input: { conversationId, body: "see attached", attachmentIds: [attachmentId] } },
  }));

// The signed URL works with no Authorization header, from plain fetch.
const url = out.send.ok ? out.send.data.sendMessage.attachments[0]?.url : null;
if (url) {
  const response = await fetch(new URL(url, uri));
  out.download = {
    status: response.status,
    contentType: response.headers.get("content-type"),
    contentDisposition: response.headers.get("content-disposition"),
    body: await response.text(),
  };
}
out.content = CONTENT;
console.log(JSON.stringify(out));
