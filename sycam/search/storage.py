"""Where studies live: Optuna storage from a URL, checked before any work, plus a claim lock.

URLs (``--storage``)::

    journal:PATH  or  PATH.journal / PATH.log   append-only journal file (the default; many
                                                processes on one host, NFS-friendly)
    sqlite:///PATH  or  PATH.db / PATH.sqlite   SQLite (one host)
    postgresql://user:pw@host:port/db           PostgreSQL (many workers on many machines;
    postgresql+psycopg2://...                   needs the psycopg2-binary package)
    memory                                      in this process only

Every store has a **claim lock** (:meth:`Store.lock`): a short critical section in which a
worker reads the study and writes its claims, so two workers never claim the same
expression. It is an ``fcntl`` lock on a file beside the journal / SQLite file, a
PostgreSQL advisory lock for PostgreSQL, a thread lock in memory. Each is released by the
operating system or the server when the process dies (SIGKILL included), so a killed
worker never leaves it held.
"""
from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SycamError

KINDS = ("journal", "sqlite", "postgresql", "memory")


class StorageError(SycamError, ValueError):
    """A storage URL that cannot be used (unknown scheme, unreachable server, missing driver)."""


def mask(url: str) -> str:
    """The URL with its password hidden (for messages)."""
    if "://" in url and "@" in url:
        head, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            creds = creds.split(":", 1)[0] + ":***"
        return f"{head}://{creds}@{host}"
    return url


def parse_url(url: str | Path) -> tuple[str, str]:
    """(kind, location): location is a file path (journal, sqlite), a SQLAlchemy URL or ''."""
    text = str(url).strip()
    if not text:
        raise StorageError("empty storage URL")
    low = text.lower()
    if low in ("memory", ":memory:", "inmemory"):
        return "memory", ""
    if low.startswith("journal:"):
        path = text.split(":", 1)[1]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise StorageError("journal: needs a file path, e.g. journal:results/search/study.journal")
        return "journal", path
    if low.startswith("sqlite:"):
        if not low.startswith("sqlite:///"):
            raise StorageError(f"{text!r}: write SQLite URLs as sqlite:///relative/path.db or sqlite:////abs/path.db")
        path = text[len("sqlite:///"):]
        if not path or path == ":memory:":
            raise StorageError("an in-memory SQLite database cannot be shared; use 'memory' or a file")
        return "sqlite", path
    if low.startswith(("postgresql://", "postgresql+", "postgres://")):
        if low.startswith("postgres://"):
            text = "postgresql://" + text[len("postgres://"):]
        return "postgresql", text
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise StorageError(f"unsupported storage scheme {scheme!r}; use journal:PATH, sqlite:///PATH, "
                           "postgresql://user:password@host:port/database or memory")
    suffix = Path(text).suffix.lower()
    if suffix in (".journal", ".log", ".jsonl"):
        return "journal", text
    if suffix in (".db", ".sqlite", ".sqlite3"):
        return "sqlite", text
    raise StorageError(f"cannot tell what storage {text!r} is; write journal:{text} or sqlite:///{text}")


@dataclass
class Store:
    """An opened Optuna storage, its kind, a printable URL and its claim lock."""

    kind: str
    url: str
    optuna: Any
    _lock: Any = field(repr=False, default=None)

    @contextlib.contextmanager
    def lock(self, study: str) -> Iterator[None]:
        """Hold the claim lock of ``study`` (re-entrant within a thread is not supported)."""
        with self._lock(study):
            yield

    def close(self) -> None:
        closer = getattr(self._lock, "close", None)
        if closer is not None:
            closer()


class _FileLock:
    """fcntl lock on a file; released by the kernel when the process dies."""

    def __init__(self, path: Path):
        self.path = path
        self._local = threading.Lock()

    @contextlib.contextmanager
    def __call__(self, study: str) -> Iterator[None]:
        import fcntl

        with self._local, open(self.path, "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class _ThreadLock:
    def __init__(self):
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self, study: str) -> Iterator[None]:
        with self._lock:
            yield


class _AdvisoryLock:
    """A PostgreSQL session advisory lock per study on its own connection (the server releases it
    when the connection drops, e.g. when the worker is killed)."""

    def __init__(self, url: str):
        import sqlalchemy

        self.engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        self._local = threading.Lock()

    @staticmethod
    def key(study: str) -> int:
        digest = hashlib.sha256(f"sycam-study:{study}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    @contextlib.contextmanager
    def __call__(self, study: str) -> Iterator[None]:
        import sqlalchemy

        key = self.key(study)
        with self._local, self.engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()

    def close(self) -> None:
        self.engine.dispose()


def open_store(url: str | Path) -> Store:
    """Open (and create if needed) the storage at ``url``; a clear :class:`StorageError` if it cannot be.

    Called before any model or data work: a wrong scheme, an unwritable folder, a missing
    PostgreSQL driver or an unreachable server fail here.
    """
    from optuna.storages import InMemoryStorage, JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    kind, where = parse_url(url)
    if kind == "memory":
        return Store(kind, "memory", InMemoryStorage(), _ThreadLock())
    if kind in ("journal", "sqlite"):
        path = Path(where)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab"):
                pass
        except OSError as err:
            raise StorageError(f"cannot write the {kind} storage file {path}: {err.strerror or err}") from None
        lock = _FileLock(path.with_name(path.name + ".sycam-lock"))
        if kind == "journal":
            backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
            try:
                storage = JournalStorage(backend)
            except Exception as err:   # a corrupt or foreign file
                raise StorageError(f"{path} is not an Optuna journal: {err}") from None
            return Store(kind, f"journal:{path}", storage, lock)
        sa_url = f"sqlite:///{path}"
        try:
            storage = RDBStorage(sa_url, engine_kwargs={"connect_args": {"timeout": 120}})
        except Exception as err:
            raise StorageError(f"cannot open SQLite storage {path}: {err}") from None
        return Store(kind, sa_url, storage, lock)
    # postgresql
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        if "+" not in where.split("://", 1)[0]:
            raise StorageError("PostgreSQL storage needs a driver: pip install psycopg2-binary") from None
    try:
        storage = RDBStorage(where, engine_kwargs={"pool_pre_ping": True})
    except ImportError as err:
        raise StorageError(f"PostgreSQL storage needs a driver ({err}); pip install psycopg2-binary") from None
    except Exception as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise StorageError(f"cannot connect to {mask(where)}: {reason}") from None
    return Store(kind, mask(where), storage, _AdvisoryLock(where))
