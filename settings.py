"""The one place that reads the environment (and an optional `.env`).

Every limit of the service is a named field here; README.md documents them in one
table. `Settings.from_env()` refuses unsafe production values.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

MIN_SECRET_LENGTH = 32


class SettingsError(RuntimeError):
    """Raised when the configuration is unsafe or malformed; the server refuses to start."""


def _read_dotenv(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def _to_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"not a boolean: {value!r}")


@dataclass(frozen=True)
class Settings:
    # --- service
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("./data")
    database_url: str = ""  # default: sqlite+aiosqlite:///<data_dir>/parley.db
    broadcast_url: str = "memory://"
    secret_key: str = ""  # default in development: generated under data_dir
    parley_env: str = "development"
    public_url: str = ""
    cors_origins: tuple[str, ...] = ()
    rate_limit_enabled: bool = True
    channel_prefix: str = "parley"  # Redis pub/sub and key namespace per deployment
    trusted_proxies: tuple[str, ...] = ()  # client address from X-Forwarded-For only via these
    behind_https: bool = False  # sends HSTS
    introspection_enabled: bool | None = None  # default: on unless production
    graphiql_enabled: bool | None = None  # default: on unless production
    field_suggestions_enabled: bool | None = None  # default: on unless production
    log_level: str = "info"
    workers: int = 1

    # --- tokens and sessions
    jwt_issuer: str = "parley"
    jwt_audience: str = "parley-api"
    access_token_ttl_seconds: int = 15 * 60
    session_idle_ttl_seconds: int = 14 * 24 * 3600
    session_absolute_ttl_seconds: int = 60 * 24 * 3600
    session_touch_interval_seconds: int = 60
    refresh_reuse_grace_seconds: int = 10
    password_min_length: int = 8
    password_max_length: int = 128
    username_max_length: int = 32
    display_name_max_length: int = 64

    # --- operation limits
    max_query_depth: int = 12
    max_aliases: int = 30
    max_directives: int = 50
    max_tokens: int = 5000
    max_request_bytes: int = 1024 * 1024
    max_ws_message_bytes: int = 1024 * 1024
    max_page_size: int = 100
    max_query_cost: int = 50_000
    max_batch_size: int = 0  # 0: batched requests refused
    max_message_length: int = 10_000
    max_group_member_ids: int = 1000
    max_group_name_length: int = 100
    max_group_description_length: int = 1000
    max_search_query_length: int = 200

    # --- files
    max_upload_bytes: int = 10 * 1024 * 1024
    max_upload_files: int = 1
    max_multipart_parts: int = 10
    max_filename_length: int = 255
    signed_url_ttl_seconds: int = 600
    pending_upload_ttl_seconds: int = 24 * 3600
    deleted_file_grace_seconds: int = 3600
    orphan_file_grace_seconds: int = 3600  # stored files without a row, and stale temp files
    max_attachments_per_message: int = 10
    cleanup_interval_seconds: int = 600  # 0: no periodic file cleanup in this process
    allowed_upload_types: tuple[str, ...] = (
        "image/jpeg", "image/png", "image/gif", "image/webp",
        "audio/mpeg", "audio/wav", "audio/ogg", "video/mp4", "video/webm",
        "application/pdf", "text/plain",
        "application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    )

    # --- realtime
    ws_connection_init_timeout_seconds: float = 10.0
    ws_keepalive_seconds: float = 15.0
    max_subscriptions_per_socket: int = 100
    max_sockets_per_user: int = 20
    typing_expiry_seconds: float = 5.0
    typing_merge_seconds: float = 2.0
    presence_grace_seconds: float = 30.0
    presence_heartbeat_seconds: float = 10.0
    ws_send_high_water_bytes: int = 1024 * 1024
    ws_send_queue_limit: int = 1000
    # uvicorn WebSocket implementation (realtime/uvicorn_ws.py): "parley" (direct frame
    # writes, lean per-socket state), "direct" (direct writes only); "websockets-sansio",
    # "websockets", "wsproto" are uvicorn's own (every frame through the ASGI send)
    ws_protocol: str = "parley"
    # freeze what survives each full GC and re-check it every 10 minutes instead of
    # walking every socket's objects on each full collection (realtime/gc_policy.py);
    # `server.py serve` turns it on, a test process keeps Python's default GC
    gc_freeze: bool = False
    # bench/reads.py's floor: hand-written SQL answering the same pages (bench/floor_app.py);
    # never on in a deployment
    bench_floor_enabled: bool = False

    # --- rate limits ("N/period", as understood by the `limits` library)
    rate_limit_auth: str = "10/minute"
    rate_limit_login_user_address: str = "5/minute"
    rate_limit_login_user: str = "50/hour"
    rate_limit_send_message: str = "30/10second"
    rate_limit_default: str = "300/minute"
    rate_limit_http_requests: str = "600/minute"

    @property
    def is_production(self) -> bool:
        return self.parley_env == "production"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'parley.db').resolve()}"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    def flag(self, name: str) -> bool:
        """Feature toggles that default to on in development and off in production."""
        value = getattr(self, name)
        return (not self.is_production) if value is None else bool(value)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, *, dotenv: Path | None = Path(".env")) -> Settings:
        source: dict[str, str] = {}
        if dotenv is not None:
            source.update(_read_dotenv(dotenv))
        source.update(os.environ if env is None else env)
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            key = f.name.upper()
            if key not in source:
                continue
            raw = source[key]
            kwargs[f.name] = _convert(f.name, f.type, raw)
        settings = cls(**kwargs)
        return settings.validated()

    def validated(self) -> Settings:
        if self.parley_env not in {"development", "production", "test"}:
            raise SettingsError("PARLEY_ENV must be development, production or test")
        if self.is_production:
            if len(self.secret_key) < MIN_SECRET_LENGTH:
                raise SettingsError(
                    f"PARLEY_ENV=production needs SECRET_KEY of at least {MIN_SECRET_LENGTH} characters"
                )
        elif self.secret_key and len(self.secret_key) < MIN_SECRET_LENGTH:
            raise SettingsError(f"SECRET_KEY must be at least {MIN_SECRET_LENGTH} characters")
        if not self.broadcast_url.startswith(("memory://", "redis://", "rediss://")):
            raise SettingsError("BROADCAST_URL must be memory:// or redis://")
        if not 1 <= self.max_page_size <= 1000:
            raise SettingsError("MAX_PAGE_SIZE must be 1..1000")
        return self

    def with_secret(self) -> Settings:
        """Fill in the development secret, generated once and kept under DATA_DIR."""
        if self.secret_key:
            return self
        path = self.data_dir / "secret_key"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
        return _replace(self, secret_key=path.read_text().strip())


def _replace(settings: Settings, **changes: Any) -> Settings:
    from dataclasses import replace

    return replace(settings, **changes)


def _convert(name: str, annotation: Any, raw: str) -> Any:
    kind = str(annotation)
    try:
        if kind.startswith("bool | None"):
            return None if raw.strip() == "" else _to_bool(raw)
        if kind == "bool":
            return _to_bool(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw)
        if kind.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise SettingsError(f"{name.upper()}: {exc}") from exc
    return raw


def settings_table() -> list[tuple[str, str]]:
    """(ENV_NAME, default) rows, used to keep README's table honest in a test."""
    defaults = Settings()
    return [(f.name.upper(), repr(getattr(defaults, f.name))) for f in fields(Settings)]


__all__ = ["Settings", "SettingsError", "field", "settings_table"]
