"""Engine, sessions and the one transaction helper every write goes through.

`transaction()` commits first and only then runs what was registered with
`tx.after_commit(...)`: nothing is announced unless it is stored.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

log = logging.getLogger("parley.db")

AfterCommit = Callable[[], Awaitable[Any]]


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL, foreign keys, a busy timeout, and BEGIN IMMEDIATE for writers.

    pysqlite's own transaction handling starts deferred transactions that fail with
    "database is locked" when two writers upgrade at once; taking the write lock at
    BEGIN makes writers queue on busy_timeout instead.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        if options.get("sqlite_autocommit", False):
            return  # Database.read_connection: the one statement is its own implicit transaction
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("sqlite_immediate", False) else "BEGIN")


@dataclass
class Database:
    url: str
    engine: AsyncEngine
    reader: async_sessionmaker[AsyncSession]
    writer: async_sessionmaker[AsyncSession]

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:  # readiness probe: any failure is "not ready"
            log.warning("database ping failed", exc_info=True)
            return False

    async def dispose(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A read session for one task (loaders, queries). Never share it across tasks."""
        async with self.reader() as session:
            yield session

    @cached_property
    def _autocommit_engine(self) -> AsyncEngine:
        if self.is_sqlite:
            return self.engine.execution_options(sqlite_autocommit=True)
        return self.engine.execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def read_connection(self) -> AsyncIterator[AsyncConnection]:
        """A Core connection for hot read paths (list pages and their loaders), without
        BEGIN and COMMIT round trips: SQLite runs each statement in its own implicit
        transaction, PostgreSQL in autocommit. Precondition: the statements need no
        common snapshot (each sees what was committed when it ran). Never share it
        across tasks."""
        async with self._autocommit_engine.connect() as conn:
            yield conn


def create_database(url: str, *, echo: bool = False, pool_size: int = 10) -> Database:
    kwargs: dict[str, Any] = {"echo": echo}
    if url.startswith("postgresql"):
        kwargs.update(pool_size=pool_size, max_overflow=pool_size * 2, pool_pre_ping=True)
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
        write_engine = engine.execution_options(sqlite_immediate=True)
    else:
        write_engine = engine
    reader = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
    writer = async_sessionmaker(write_engine, expire_on_commit=False, autoflush=False)
    return Database(url=url, engine=engine, reader=reader, writer=writer)


@dataclass
class Transaction:
    session: AsyncSession
    _after: list[AfterCommit] = field(default_factory=list)

    def after_commit(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> None:
        """Run `fn(*args, **kwargs)` once the transaction has committed (never on rollback)."""
        self._after.append(lambda: fn(*args, **kwargs))


@asynccontextmanager
async def transaction(db: Database) -> AsyncIterator[Transaction]:
    """One write transaction in its own session; after-commit hooks run once it is durable.

    A hook that fails is logged, never raised: the write already happened, and the
    realtime layer's replay-by-cursor covers a lost announcement.
    """
    async with db.writer() as session:
        async with session.begin():
            tx = Transaction(session)
            yield tx
    for hook in tx._after:
        try:
            await hook()
        except Exception:
            log.exception("after-commit hook failed")
