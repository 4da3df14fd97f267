"""Parley's Starlette app and its command line.

`python server.py serve|migrate|create-admin USER|export-schema`
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import secrets
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.http.ides import get_graphql_ide_html
from strawberry.types.graphql import OperationType

from auth import authenticate as auth_authenticate
from auth.perimeter import GRAPHIQL_CSP, SecurityHeaders, client_address
from db.engine import Database, create_database
from db.migrate import upgrade
from errors import AppError, BadUserInput, PayloadTooLarge, RateLimited
from realtime.groups import PRESSURE
from realtime.transport import WebSocketShortcut
from resolvers.context import Context, Services
from schema import ParleySchema, build_schema, export_sdl
from schema.errors import app_error_payload, format_errors
from schema.params import parse_operation
from settings import Settings, SettingsError

log = logging.getLogger("parley")

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"


@dataclass
class AppState:
    """What the lifespan builds; routes read it at request time."""

    settings: Settings
    schema: ParleySchema | None = None
    services: Services | None = None
    ws_handler: Any = None  # realtime.ws.GraphQLWebSocketHandler
    file_endpoint: Any = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


# ----------------------------------------------------------------------------- HTTP


def _wants_graphql_response(request: Request) -> bool:
    return GRAPHQL_RESPONSE in request.headers.get("accept", "")


def _json_response(
    request: Request, payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    media = GRAPHQL_RESPONSE if _wants_graphql_response(request) else JSON
    # Replies depend on Accept and carry per-viewer data: never cached by intermediaries.
    merged = {"Cache-Control": "no-store", "Vary": "Accept, Authorization", **(headers or {})}
    return Response(orjson.dumps(payload), status_code=status, media_type=media, headers=merged)


def _refusal(request: Request, error: AppError, status: int) -> Response:
    headers = {}
    if isinstance(error, RateLimited):
        headers["Retry-After"] = str(error.retry_after)
    return _json_response(request, {"errors": [app_error_payload(error)]}, status, headers)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class GraphQLHTTP:
    """GraphQL over HTTP: POST (JSON or multipart), GET for queries, GraphiQL for browsers."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        PRESSURE.requests += 1  # the fan-out takes shorter slices meanwhile (realtime/groups.py)
        try:
            request = Request(scope, receive)
            response = await self.handle(request)
            await response(scope, receive, send)
        finally:
            PRESSURE.requests -= 1

    async def handle(self, request: Request) -> Response:
        state = self.state
        assert state.services is not None and state.schema is not None
        settings = state.settings
        address = client_address(request.scope, settings.trusted_proxies)
        try:
            if request.method == "GET":
                if "query" not in request.query_params:
                    if settings.flag("graphiql_enabled") and "text/html" in request.headers.get("accept", ""):
                        return HTMLResponse(
                            get_graphql_ide_html("graphiql").replace("Strawberry GraphiQL", "Parley GraphiQL"),
                            headers={"Content-Security-Policy": GRAPHIQL_CSP},
                        )
                    raise BadUserInput("No GraphQL query in the request", field="query")
            limiter = state.services.limiter
            if limiter is not None:
                await limiter.check_request(address)
            if request.method == "GET":
                params = [self._get_params(request)]
                allowed = {OperationType.QUERY}
            else:
                params = await self._post_params(request)
                allowed = {OperationType.QUERY, OperationType.MUTATION}
        except PayloadTooLarge as exc:
            return _refusal(request, exc, 413)
        except RateLimited as exc:
            return _refusal(request, exc, 429)
        except AppError as exc:
            return _refusal(request, exc, 400)

        try:
            context = await self.context(request, address)
            results = [await self.execute(request, context, p, allowed) for p in params]
        finally:
            for p in params:  # multipart: the uploads' temp files (storage.wiring)
                if p.get("cleanup") is not None:
                    await p["cleanup"]()
        if isinstance(params, _Batch):
            return _json_response(request, [r for r, _ in results])
        payload, status = results[0]
        allow = {"Allow": "POST"} if status == 405 else None  # RFC 9110: a 405 names what works
        return _json_response(request, payload, status, allow)

    def _get_params(self, request: Request) -> dict[str, Any]:
        raw: dict[str, Any] = dict(request.query_params)
        for key in ("variables", "extensions"):
            if key in raw:
                try:
                    raw[key] = json.loads(raw[key])
                except ValueError:
                    raise BadUserInput(f"{key} is not valid JSON", field=key) from None
        return parse_operation(raw)

    async def _post_params(self, request: Request) -> list[dict[str, Any]]:
        settings = self.state.settings
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            uploads = self.state.services.extras.get("multipart") if self.state.services else None
            if uploads is None:
                raise BadUserInput("Multipart requests are not accepted here", field="body")
            return [await uploads(request)]
        body = await _read_body(request, settings.max_request_bytes)
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise BadUserInput("The request body is not valid JSON", field="body") from None
        if isinstance(raw, list):
            if settings.max_batch_size <= 0:
                raise BadUserInput("Batched requests are not accepted", field="body")
            if not raw or len(raw) > settings.max_batch_size:
                raise BadUserInput(f"A batch holds 1..{settings.max_batch_size} operations", field="body")
            return _Batch(parse_operation(item) for item in raw)
        return [parse_operation(raw)]

    async def context(self, request: Request, address: str | None) -> Context:
        services = self.state.services
        assert services is not None
        ctx = Context(
            services=services,
            ip_address=address,
            user_agent=(request.headers.get("user-agent") or "")[:512] or None,
            request_id=request.headers.get("x-request-id", "")[:64] or secrets.token_hex(8),
            transport="http",
            request=request,
        )
        token = auth_authenticate.bearer_token(request.headers.get("authorization"))
        if token is not None:
            try:
                ctx.viewer = await auth_authenticate.authenticate(services, token)
            except AppError as exc:
                ctx.auth_error = exc
        return ctx

    async def execute(
        self, request: Request, context: Context, params: dict[str, Any], allowed: set[OperationType]
    ) -> tuple[dict[str, Any], int]:
        assert self.state.schema is not None
        try:
            result = await self.state.schema.execute(
                params["query"],
                variable_values=params["variables"],
                context_value=context,
                operation_name=params["operation_name"],
                allowed_operation_types=allowed,
            )
        except Exception as exc:  # InvalidOperationTypeError and friends
            name = type(exc).__name__
            if name == "InvalidOperationTypeError":
                error = BadUserInput("Only queries are allowed over GET; use POST", field="query")
                return {"errors": [app_error_payload(error)]}, 405
            if name in {"MissingQueryError", "CannotGetOperationTypeError"}:
                error = BadUserInput("Cannot determine the operation to run", field="operationName")
                return {"errors": [app_error_payload(error)]}, 400
            raise
        payload: dict[str, Any] = {}
        if result.errors:
            payload["errors"] = format_errors(
                list(result.errors),
                request_id=context.request_id,
                suggestions=self.state.settings.flag("field_suggestions_enabled"),
            )
        status = 200
        if result.data is None and result.errors and _pre_execution(payload["errors"]):
            # GraphQL over HTTP: with application/graphql-response+json a request that
            # never executed (parse or validation failure) is a 400.
            if _wants_graphql_response(request):
                status = 400
        else:
            payload["data"] = result.data
        if "data" not in payload and status == 200:
            payload["data"] = None
        return payload, status


class _Batch(list):  # type: ignore[type-arg]
    """Marks a batched request so the reply is a list too."""


def _pre_execution(errors: list[dict[str, Any]]) -> bool:
    codes = {e.get("extensions", {}).get("code") for e in errors}
    return bool(codes) and codes <= {"GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED", "BAD_USER_INPUT"} and all(
        "path" not in e for e in errors
    )


# ------------------------------------------------------------------------- probes


def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state: AppState = request.app.state.parley
    checks: dict[str, bool] = {}
    if state.services is not None:
        checks["database"] = await state.services.db.ping()
        hub = state.services.extras.get("hub")
        checks["broker"] = await hub.ping() if hub is not None else True
    ready = bool(checks) and all(checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


# ----------------------------------------------------------------------- lifespan


async def build_services(settings: Settings, db: Database) -> Services:
    """Everything requests share. Optional parts are wired by `server_parts`."""
    services = Services(settings=settings, db=db)
    for part in _server_parts():
        await part.setup(services)
    return services


def _server_parts() -> list[Any]:
    """Modules that add themselves to Services: each has `async setup(services)` and
    `async teardown(services)`. Kept as a list so each capability wires itself."""
    from importlib import import_module

    names = ("auth.wiring", "realtime.wiring", "storage.wiring", "resolvers.wiring")
    parts = []
    for name in names:
        try:
            parts.append(import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return parts


def create_app(settings: Settings | None = None) -> Starlette:
    settings = (settings or Settings.from_env()).with_secret()
    state = AppState(settings=settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = create_database(settings.effective_database_url)
        await upgrade(db.engine)
        state.schema = build_schema(settings)
        state.services = await build_services(settings, db)
        state.services.extras["schema"] = state.schema
        ws_factory = state.services.extras.get("ws_handler_factory")
        state.ws_handler = ws_factory(state.schema, state.services) if ws_factory else None
        state.file_endpoint = state.services.extras.get("file_endpoint")
        if settings.gc_freeze:
            from realtime import gc_policy

            gc_policy.install()
        try:
            yield
        finally:
            for part in reversed(_server_parts()):
                with contextlib.suppress(Exception):
                    await part.teardown(state.services)
            await db.dispose()

    async def websocket_endpoint(websocket: WebSocket) -> None:
        if state.ws_handler is None:
            await websocket.close(code=1011)
            return
        await state.ws_handler(websocket)

    async def files_endpoint(request: Request) -> Response:
        # A Request endpoint: Route calls plain functions as endpoint(request).
        if state.file_endpoint is None:
            return Response(status_code=404)
        return await state.file_endpoint(request)  # storage.http.make_file_endpoint

    graphql = GraphQLHTTP(state)
    routes = [
        Route("/graphql", graphql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", websocket_endpoint),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/files/{rest:path}", files_endpoint, methods=["GET", "HEAD"]),
    ]
    middleware = [
        # first: the GraphQL WebSocket skips the HTTP-only layers below (memory per socket)
        Middleware(WebSocketShortcut, path="/graphql", endpoint=websocket_endpoint),
        Middleware(SecurityHeaders, hsts=settings.behind_https),
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=[
                "authorization", "content-type", "accept", "apollo-require-preflight",
                "x-apollo-operation-name", "x-request-id", "apollographql-client-name",
                "apollographql-client-version",
            ],
            expose_headers=["Retry-After", "X-Request-Id"],
            allow_credentials=False,
            max_age=600,
        ),
    ]
    if settings.bench_floor_enabled:  # benchmark 2's floor (bench/floor_app.py); off by default
        from bench.floor_app import floor_routes

        routes += floor_routes(state)
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.parley = state
    return app


# ---------------------------------------------------------------------------- CLI


def _serve(settings: Settings) -> None:
    import os

    import uvicorn

    from realtime.uvicorn_ws import uvicorn_ws

    # the GC policy for many long-lived sockets (realtime/gc_policy.py), in every worker
    # (they build their Settings from the environment); GC_FREEZE=false turns it off
    os.environ.setdefault("GC_FREEZE", "true")
    uvicorn.run(
        "server:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws=uvicorn_ws(settings.ws_protocol),  # realtime/uvicorn_ws.py: direct frame writes
        ws_per_message_deflate=False,
        ws_max_size=settings.max_ws_message_bytes,
        proxy_headers=False,
        workers=settings.workers if settings.workers > 1 else None,
        lifespan="on",
    )


async def _migrate(settings: Settings) -> None:
    db = create_database(settings.effective_database_url)
    try:
        await upgrade(db.engine)
    finally:
        await db.dispose()


async def _create_admin(settings: Settings, username: str, password: str | None) -> str:
    from auth import accounts

    db = create_database(settings.effective_database_url)
    try:
        await upgrade(db.engine)
        return await accounts.create_or_promote_admin(settings, db, username, password)
    finally:
        await db.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="server.py", description="Parley chat backend")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="serve HTTP and WebSocket (applies migrations first)")
    sub.add_parser("migrate", help="apply database migrations")
    admin = sub.add_parser("create-admin", help="create an admin user or promote an existing one")
    admin.add_argument("username")
    admin.add_argument("--password", help="for a new user (default: $PARLEY_ADMIN_PASSWORD or a prompt)")
    export = sub.add_parser("export-schema", help="write the SDL")
    export.add_argument("--output", default="schema.graphql", help="file to write, - for stdout")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.command == "export-schema":
        sdl = export_sdl()
        if args.output == "-":
            sys.stdout.write(sdl)
        else:
            Path(args.output).write_text(sdl)
        return 0
    try:
        settings = Settings.from_env().with_secret()
    except SettingsError as exc:
        print(f"refusing to start: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        _serve(settings)
    elif args.command == "migrate":
        asyncio.run(_migrate(settings))
    elif args.command == "create-admin":
        import getpass
        import os

        password = args.password or os.environ.get("PARLEY_ADMIN_PASSWORD")
        if password is None and sys.stdin.isatty():
            password = getpass.getpass("Password for a new admin (ignored if the user exists): ")
        try:
            print(asyncio.run(_create_admin(settings, args.username, password)))
        except AppError as exc:
            print(f"create-admin: {exc.message}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
