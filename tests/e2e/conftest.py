"""End-to-end fixtures: a real Parley (`server.py serve`, uvicorn) in a subprocess on a
free port, and a runner for the Node scripts that drive it with real client libraries.

`parley_server_factory(**env)` starts one server per call (stopped at the end of the
module); `http_server` is the shared one for the HTTP client tests, parametrised
"embedded" (SQLite + memory://) and "services" (PostgreSQL + Redis, skipped with a
reason when TEST_DATABASE_URL / TEST_REDIS_URL are unset). Node scripts print one JSON
line with what they observed; `run_node(script, *args, env=...)` returns it decoded.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RUN_ID, TEST_REDIS_URL, _services_skip_reason

E2E = Path(__file__).resolve().parent
REPO = E2E.parent.parent
NODE_MODULES = E2E / "node_modules"
SECRET_KEY = "e2e-secret-" + "k" * 29  # 40 characters
STARTUP_TIMEOUT = 30.0
ALLOWED_ORIGIN = "http://app.parley.test"
OTHER_ORIGIN = "http://evil.example"


def node_skip_reason(*packages: str) -> str | None:
    """Why the Node client tests cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed: the Node client end-to-end tests are skipped"
    missing = [p for p in packages if not (NODE_MODULES / p / "package.json").exists()]
    if not NODE_MODULES.is_dir() or missing:
        return (
            f"tests/e2e/node_modules is missing {', '.join(missing) or 'everything'}: "
            "run `npm ci --prefix tests/e2e` (make test does)"
        )
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ParleyServer:
    url: str  # http://127.0.0.1:<port>
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    env: dict[str, str]

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + "/graphql"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def _wait_healthy(server: ParleyServer) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server.py serve exited with {server.process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(f"{server.url}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"server.py serve not healthy after {STARTUP_TIMEOUT}s:\n{server.log()}")


def start_server(data_dir: Path, **env_overrides: str) -> ParleyServer:
    """`.venv/bin/python server.py serve` (or this interpreter) with a clean embedded
    environment plus `env_overrides`; returns once /healthz answers. Retries on another
    port if the free port was taken between choosing it and binding it."""
    for attempt in range(3):
        try:
            return _start_server(data_dir, **env_overrides)
        except RuntimeError as exc:
            if attempt == 2 or "address already in use" not in str(exc).lower():
                raise
    raise AssertionError("unreachable")


def _start_server(data_dir: Path, **env_overrides: str) -> ParleyServer:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATA_DIR": str(data_dir),
        "SECRET_KEY": SECRET_KEY,
        "PARLEY_ENV": "test",
        "DATABASE_URL": "",
        "BROADCAST_URL": "memory://",
        "RATE_LIMIT_ENABLED": "false",
        "CHANNEL_PREFIX": f"parley-e2e-{RUN_ID}-{uuid.uuid4().hex[:8]}",
        "LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
        **env_overrides,
    }
    venv_python = REPO / ".venv" / "bin" / "python"
    python = str(venv_python) if venv_python.exists() else sys.executable
    log_path = data_dir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [python, "server.py", "serve"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    server = ParleyServer(f"http://127.0.0.1:{port}", process, data_dir, log_path, env)
    _wait_healthy(server)
    return server


@pytest.fixture(scope="module")
def parley_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ParleyServer]]:
    """`parley_server_factory(**ENV)` -> a running ParleyServer, stopped after the module."""
    servers: list[ParleyServer] = []

    def factory(**env: str) -> ParleyServer:
        server = start_server(tmp_path_factory.mktemp("parley-e2e"), **env)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


def services_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """DATABASE_URL / BROADCAST_URL for the "services" backend (skips without them)."""
    reason = _services_skip_reason()
    if reason:
        pytest.skip(reason)
    return {"DATABASE_URL": request.getfixturevalue("pg_database_url"), "BROADCAST_URL": TEST_REDIS_URL}


@pytest.fixture(scope="module", params=["embedded", "services"])
def http_server(
    request: pytest.FixtureRequest, parley_server_factory: Callable[..., ParleyServer]
) -> ParleyServer:
    """The server the HTTP client tests share: rate limits off, CORS for ALLOWED_ORIGIN."""
    reason = node_skip_reason("@apollo/client", "@urql/core", "graphql", "rxjs")
    if reason:
        pytest.skip(reason)
    env = {"CORS_ORIGINS": ALLOWED_ORIGIN}
    if request.param == "services":
        env.update(services_env(request))
    return parley_server_factory(**env)


RATE_LIMITED_HTTP_REQUESTS = 3


@pytest.fixture(scope="module")
def rate_limited_server(parley_server_factory: Callable[..., ParleyServer]) -> ParleyServer:
    """Embedded, rate limits on, an HTTP budget of RATE_LIMITED_HTTP_REQUESTS per minute."""
    reason = node_skip_reason("@apollo/client", "graphql", "rxjs")
    if reason:
        pytest.skip(reason)
    return parley_server_factory(
        RATE_LIMIT_ENABLED="true", RATE_LIMIT_HTTP_REQUESTS=f"{RATE_LIMITED_HTTP_REQUESTS}/minute"
    )


def run_node(script: str | Path, *args: str, env: dict[str, str] | None = None, timeout: float = 30) -> Any:
    """Run tests/e2e/<script> with node; return the JSON of its last stdout line."""
    path = E2E / script
    completed = subprocess.run(
        ["node", str(path), *args], cwd=E2E, env={**os.environ, **(env or {})},
        capture_output=True, timeout=timeout, check=False,
    )
    out = completed.stdout.decode(errors="replace").strip()
    err = completed.stderr.decode(errors="replace")
    assert completed.returncode == 0, f"{path.name} exited {completed.returncode}:\n{err}\n{out}"
    assert out, f"{path.name} printed nothing:\n{err}"
    return json.loads(out.splitlines()[-1])
