"""Where studies live: Optuna storage from a URL, checked before any work, plus a claim lock.

URLs (``--storage``)::

    journal:PATH  or  PATH.journal / PATH.log   append-only journal file (the default; many
                                                processes on one host, NFS-friendly)
    sqlite:///PATH  or  PATH.db / PATH.sqlite   SQLite (one host)
    postgresql://user:pw@host:port/db           PostgreSQL (many workers on many machines;
    postgresql+psycopg2://...                   needs the psycopg2-binary package)
    memory                                      in this process only

A study name is a name, not a path (:func:`check_study_name`). A journal or SQLite file is
only created in a folder that exists, or in the one folder the caller may create (``sycam
search``: the ``--out`` folder); a missing folder in a URL is an error, not a new folder.

Optuna's journal appends under a lock file (``<journal>.lock``) that a killed writer leaves
behind; :class:`OwnedJournalLock` writes the owner's host and pid into it, so the next
writer on that host removes it at once when that process is dead, and falls back to
Optuna's grace period only for owners it cannot check (another host, an old lock file).

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
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SycamError

KINDS = ("journal", "sqlite", "postgresql", "memory")


class StorageError(SycamError, ValueError):
    """A storage URL that cannot be used (unknown scheme, unreachable server, missing driver)."""


def check_study_name(name: str) -> str:
    """``name`` if it is a usable study name: not empty, no path separators, not ``.``/``..``."""
    if not name or not name.strip():
        raise StorageError("the study name is empty")
    bad = [c for c in ("/", "\\", "\0") if c in name] or [c for c in name if not c.isprintable()]
    if bad or name in (".", ".."):
        raise StorageError(f"study name {name!r} is a path, not a name (no '/', '\\', '..' or control "
                           "characters); choose where it is written with --out / --storage")
    return name


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


class OwnedJournalLock:
    """Optuna's journal lock file (``<journal>.lock``, created exclusively) that names its owner.

    The lock is a symbolic link to ``sycam:<host>:<pid>`` (created atomically with its
    content). A writer that finds it held by a dead process of this host removes it at once
    (under an ``fcntl`` guard, so two writers never both break it); any other owner (another
    host, a plain Optuna lock file) is broken after ``grace`` seconds without change, as
    Optuna does.
    """

    def __init__(self, path: str | Path, grace: float = 30.0):
        self.file = f"{path}.lock"
        self.grace = grace

    @staticmethod
    def owner() -> str:
        return f"sycam:{socket.gethostname()}:{os.getpid()}"

    def _holder(self) -> tuple[str, float] | None:
        """(owner text, change time) of the current lock; None if there is none."""
        try:
            st = os.lstat(self.file)
            text = os.readlink(self.file) if os.path.islink(self.file) else ""
        except OSError:
            return None
        return text, st.st_mtime

    @staticmethod
    def dead(owner: str) -> bool:
        """True when ``owner`` is a process of this host that no longer runs (or a zombie)."""
        parts = owner.split(":")
        if len(parts) != 3 or parts[0] != "sycam" or parts[1] != socket.gethostname() or not parts[2].isdigit():
            return False
        pid = int(parts[2])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:          # another user's process: alive
            return False
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        except (OSError, IndexError):
            return False

    def _break(self, seen: tuple[str, float]) -> None:
        """Remove the lock if it is still the one ``seen`` (serialised between writers)."""
        import fcntl

        with open(f"{self.file}.guard", "a") as guard:
            fcntl.flock(guard.fileno(), fcntl.LOCK_EX)
            if self._holder() == seen:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.file)

    def acquire(self) -> bool:
        delay, seen, since = 0.001, None, time.monotonic()
        while True:
            try:
                os.symlink(self.owner(), self.file)
                return True
            except FileExistsError:
                pass
            holder = self._holder()
            if holder is None:
                continue
            if holder != seen:
                seen, since = holder, time.monotonic()
            if self.dead(holder[0]) or time.monotonic() - since > self.grace:
                self._break(holder)
                delay = 0.001
                continue
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def release(self) -> None:
        """Remove the lock if it is still this process's (a lock broken after the grace period is not)."""
        holder = self._holder()
        if holder is not None and holder[0] == self.owner():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.file)


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


def open_store(url: str | Path, create: str | Path | None = None) -> Store:
    """Open (and create if needed) the storage at ``url``; a clear :class:`StorageError` if it cannot be.

    Called before any model or data work: a wrong scheme, a missing or unwritable folder, a
    missing PostgreSQL driver or an unreachable server fail here. ``create``: the one folder
    that may be made for a journal / SQLite file (e.g. the report folder the user named).
    """
    from optuna.storages import InMemoryStorage, JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    kind, where = parse_url(url)
    if kind == "memory":
        return Store(kind, "memory", InMemoryStorage(), _ThreadLock())
    if kind in ("journal", "sqlite"):
        path = Path(where)
        folder = path.parent
        may_create = create is not None and os.path.abspath(folder) == os.path.abspath(create)
        if not folder.is_dir() and not (may_create and not folder.exists()):
            raise StorageError(f"the folder {folder} of the {kind} storage {path} does not exist "
                               "(or is not a folder); create it first")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(path, "ab"):
                pass
        except OSError as err:
            raise StorageError(f"cannot write the {kind} storage file {path}: {err.strerror or err}") from None
        lock = _FileLock(path.with_name(path.name + ".sycam-lock"))
        if kind == "journal":
            backend = JournalFileBackend(str(path), lock_obj=OwnedJournalLock(path))
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
