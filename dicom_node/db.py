"""The job store's database: SQLite for one machine (the default), PostgreSQL for many.

:class:`~dicom_node.store.Store` writes one SQL dialect, the subset both speak
(``ON CONFLICT``, ``RETURNING``, ``?`` placeholders); this module opens the connection,
translates placeholders for PostgreSQL, runs transactions and gives rows that read by
name and by position alike. :data:`STORE_ERRORS` is what a failed database operation
raises, whichever database it is.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

try:  # PostgreSQL support is optional: the embedded node needs only SQLite
    import psycopg
    _PG_ERRORS: tuple[type[BaseException], ...] = (psycopg.Error,)
except ImportError:  # pragma: no cover - exercised only without the extra installed
    psycopg = None  # type: ignore[assignment]
    _PG_ERRORS = ()

STORE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, *_PG_ERRORS)
"""Raised by a failed store operation (disk full, database gone, locked)."""
STORE_OR_DISK_ERRORS: tuple[type[BaseException], ...] = (OSError, *STORE_ERRORS)
POSTGRES_URL = re.compile(r"postgres(ql)?://")


class Row:
    """A result row: ``row[0]``, ``row["name"]``, ``dict(row)``, ``tuple(row)``."""

    __slots__ = ("_names", "_values")

    def __init__(self, names: Sequence[str], values: Sequence[Any]) -> None:
        self._names = tuple(names)
        self._values = tuple(values)

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return self._values[self._names.index(key)]
        return self._values[key]

    def keys(self) -> tuple[str, ...]:
        return self._names

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What :class:`~dicom_node.store.Store` needs of a database connection."""

    dialect: str

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def transaction(self) -> Any: ...

    def create_schema(self, schema: str) -> None: ...

    def close(self) -> None: ...


class SqliteConnection:
    """One thread's SQLite connection (WAL, so several processes share the file)."""

    dialect = "sqlite"

    def __init__(self, path: Path, *, synchronous: str = "NORMAL") -> None:
        self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process (the OS keeps the WAL); the
        # received files themselves are fsync'ed and re-registered by reconcile().
        self._db.execute(f"PRAGMA synchronous={synchronous}")

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        return self._db.execute(sql, args)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)

    @contextmanager
    def transaction(self) -> Iterator[SqliteConnection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self
            self._db.execute("COMMIT")
        except BaseException:
            # a failed COMMIT (disk full) leaves the transaction open: end it, or every
            # later BEGIN on this thread's connection fails too
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def create_schema(self, schema: str) -> None:
        self._db.executescript(schema.format(id="INTEGER PRIMARY KEY", float="REAL"))

    def close(self) -> None:
        self._db.close()


def _row_factory(cursor: Any) -> Any:
    names = [column.name for column in cursor.description or ()]
    return lambda values: Row(names, values)


class PostgresConnection:
    """One thread's PostgreSQL connection: autocommit outside :meth:`transaction`."""

    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        if psycopg is None:
            raise RuntimeError("PostgreSQL store: install psycopg (pip install 'psycopg[binary]')")
        self._db = psycopg.connect(url, autocommit=True, row_factory=_row_factory,
                                   connect_timeout=10)

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s")

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        return self._db.execute(self._sql(sql), tuple(args))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._db.cursor() as cursor:
            cursor.executemany(self._sql(sql), [tuple(r) for r in rows])

    @contextmanager
    def transaction(self) -> Iterator[PostgresConnection]:
        with self._db.transaction():
            yield self

    def create_schema(self, schema: str) -> None:
        # two nodes starting at once must not both create the tables: one lock
        with self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(7172635)")
            for statement in schema.format(id="BIGSERIAL PRIMARY KEY",
                                           float="DOUBLE PRECISION").split(";"):
                if statement.strip():
                    self._db.execute(statement)

    def close(self) -> None:
        self._db.close()


class ConnectionPool:
    """One connection per thread (sqlite3 and psycopg connections are not shared)."""

    def __init__(self, target: str | Path) -> None:
        self.target = target
        self.postgres = isinstance(target, str) and bool(POSTGRES_URL.match(target))
        self._local = threading.local()

    def get(self) -> Connection:
        db: Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = (PostgresConnection(str(self.target)) if self.postgres
                  else SqliteConnection(Path(self.target)))
            self._local.db = db
        return db

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def describe(self) -> str:
        """For logs: the database kind and where, never a password."""
        if self.postgres:
            return "postgresql://" + str(self.target).split("@")[-1]
        return f"sqlite:{self.target}"
