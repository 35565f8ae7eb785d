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
behind; :class:`OwnedJournalLock` writes its owner (host, boot id, pid namespace, pid, start
time, a per-lock token) into it, so the next writer in the same host, boot and pid namespace
removes it at once when that process is dead, and falls back to Optuna's grace period only
for owners it cannot check (another host or container, an old lock file). In a folder without
symbolic links (SMB/CIFS, exFAT) the journal uses Optuna's ``JournalFileOpenLock`` instead.

Every store has a **claim lock** (:meth:`Store.lock`): a short critical section in which a
worker reads the study and writes its claims, so two workers never claim the same
expression. It is an ``fcntl`` lock on a file beside the journal / SQLite file, a
PostgreSQL advisory lock for PostgreSQL, a thread lock in memory. Each is released by the
operating system or the server when the process dies (SIGKILL included), so a killed
worker never leaves it held.
"""
from __future__ import annotations

import abc
import contextlib
import fcntl
import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SycamError
from . import processes

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

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


class ClaimLock(abc.ABC):
    """A store's claim lock: held by a worker while it claims or requeues a study's trials, across
    processes (and threads) of every worker of that store."""

    @abc.abstractmethod
    def hold(self, study: str) -> contextlib.AbstractContextManager[None]:
        """Hold the lock of ``study`` for the ``with`` block (not re-entrant within a thread)."""

    def close(self) -> None:  # noqa: B027 - an optional hook, a no-op unless a lock keeps something open
        """Release what the lock keeps open (nothing by default)."""


@dataclass
class Store:
    """An opened Optuna storage, its kind, a printable URL and its claim lock."""

    kind: str
    url: str
    optuna: BaseStorage
    claim: ClaimLock = field(repr=False)

    def lock(self, study: str) -> contextlib.AbstractContextManager[None]:
        """Hold the claim lock of ``study`` (re-entrant within a thread is not supported)."""
        return self.claim.hold(study)

    def close(self) -> None:
        self.claim.close()


class _FileLock(ClaimLock):
    """fcntl lock on a file; released by the kernel when the process dies."""

    def __init__(self, path: Path):
        self.path = path
        self._local = threading.Lock()

    @contextlib.contextmanager
    def hold(self, study: str) -> Iterator[None]:
        with self._local, open(self.path, "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class OwnedJournalLock:
    """Optuna's journal lock file (``<journal>.lock``, created exclusively) that names its owner.

    The lock is a symbolic link (created atomically with its content) to
    ``sycam:<host>:<pid>:<boot id>:<pid namespace>:<start time>:<token>``. A writer that finds
    it held by a process of its own host, boot and pid namespace that is gone, a zombie or a
    different process under a reused pid (another start time) removes it at once (under an
    ``fcntl`` guard, so two writers never both break it); any other owner (another host,
    container or boot, a plain Optuna lock file, an older sycam lock) is broken after
    ``grace`` seconds without change, as Optuna does. The token is unique to this lock
    object, so one lock never releases another's, even in the same process. Where ``/proc``
    is missing, the boot id, namespace and start time are empty and only host and pid count.

    Folders without symbolic links (SMB/CIFS, exFAT) get Optuna's ``JournalFileOpenLock``
    instead (:func:`open_store`).
    """

    def __init__(self, path: str | Path, grace: float = 30.0):
        self.file = f"{path}.lock"
        self.grace = grace
        self._owner: tuple[int, str] | None = None     # (pid, owner text) for this process

    @staticmethod
    def describe(pid: int, token: str) -> str:
        """The owner text of process ``pid`` of this host, boot and pid namespace, with ``token``."""
        stat = processes.stat(pid)
        return ":".join(("sycam", socket.gethostname(), str(pid), processes.boot_id(),
                         processes.pid_namespace(), stat[1] if stat else "", token))

    def owner(self) -> str:
        """The text this lock writes into ``<journal>.lock``: this process (host, pid, boot id, pid
        namespace, start time) and a token unique to this lock object (new in a forked child)."""
        pid = os.getpid()
        if self._owner is None or self._owner[0] != pid:
            self._owner = (pid, self.describe(pid, uuid.uuid4().hex))
        return self._owner[1]

    @staticmethod
    def parse(owner: str) -> tuple[str, int, str, str, str, str] | None:
        """(host, pid, boot id, pid namespace, start time, token) of an owner text; None if it is not one."""
        head, _, rest = owner.partition(":")
        parts = rest.rsplit(":", 5)
        if head != "sycam" or len(parts) != 6 or not parts[0] or not parts[1].isdigit():
            return None
        host, pid, boot, ns, start, token = parts
        return host, int(pid), boot, ns, start, token

    def _holder(self) -> tuple[str, float] | None:
        """(owner text, change time) of the current lock; None if there is none."""
        try:
            st = os.lstat(self.file)
            text = os.readlink(self.file) if os.path.islink(self.file) else ""
        except OSError:
            return None
        return text, st.st_mtime

    @classmethod
    def dead(cls, owner: str) -> bool:
        """True when ``owner`` is a process of this host, boot and pid namespace that no longer runs:
        gone, a zombie, or its pid now another process's (another start time). False for any
        owner that cannot be checked here (other host, namespace or boot; not a sycam owner)."""
        parsed = cls.parse(owner)
        if parsed is None:
            return False
        host, pid, boot, ns, start, _ = parsed
        if (host, boot, ns) != (socket.gethostname(), processes.boot_id(), processes.pid_namespace()):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:          # another user's process: alive unless /proc says otherwise
            pass
        stat = processes.stat(pid)
        if stat is None:
            return False
        return stat[0] in ("Z", "X") or (bool(start) and stat[1] != start)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Serialise removals of the lock (breaking it, releasing it) between writers."""
        with open(f"{self.file}.guard", "a") as guard:
            fcntl.flock(guard.fileno(), fcntl.LOCK_EX)
            yield

    def _break(self, seen: tuple[str, float]) -> None:
        """Remove the lock if it is still the one ``seen``."""
        with self._guard():
            if self._holder() == seen:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.file)

    def acquire(self) -> bool:
        """Wait until ``<journal>.lock`` is ours; True.

        Creates the lock as a symbolic link to :meth:`owner`. While another holds it, waits
        (backing off up to 0.25 s), breaks it at once when :meth:`dead` says its owner is, and
        after ``grace`` seconds in which it did not change otherwise. OSError (other than the
        lock existing) is raised, e.g. on a folder without symbolic links.
        """
        delay, seen, since = 0.001, None, time.monotonic()
        owner = self.owner()
        while True:
            try:
                os.symlink(owner, self.file)
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
        """Remove the lock if it is still this lock object's (not one broken after the grace period
        and since taken by another); checked and removed under the guard, so no other writer can
        remove and retake it in between."""
        with self._guard():
            holder = self._holder()
            if holder is not None and holder[0] == self.owner():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.file)


def _supports_symlinks(folder: Path) -> bool:
    """Whether symbolic links can be made in ``folder`` (not on SMB/CIFS, exFAT, ...)."""
    probe = folder / f".sycam-symlink-probe-{uuid.uuid4().hex}"
    try:
        os.symlink("probe", probe)
    except (OSError, NotImplementedError):
        return False
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return True


class _ThreadLock(ClaimLock):
    """The in-memory store's lock: its workers are threads of one process."""

    def __init__(self):
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, study: str) -> Iterator[None]:
        with self._lock:
            yield


class _AdvisoryLock(ClaimLock):
    """A PostgreSQL session advisory lock per study on its own connection (the server releases it
    when the connection drops, e.g. when the worker is killed)."""

    def __init__(self, url: str):
        import sqlalchemy  # deferred: start-up (only PostgreSQL stores need it)

        self.engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        self._local = threading.Lock()

    @staticmethod
    def key(study: str) -> int:
        digest = hashlib.sha256(f"sycam-study:{study}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    @contextlib.contextmanager
    def hold(self, study: str) -> Iterator[None]:
        import sqlalchemy  # deferred: start-up (only PostgreSQL stores need it)

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


def _register_lock_base() -> None:
    """Make :class:`OwnedJournalLock` an Optuna ``BaseJournalFileLock`` where Optuna exports that class
    publicly (not in Optuna 5.1). Registered rather than inherited: this module does not import
    Optuna until a store is opened (start-up time)."""
    import optuna.storages.journal as journal  # deferred: optuna costs start-up until a store is opened

    base = getattr(journal, "BaseJournalFileLock", None)
    if base is not None and hasattr(base, "register") and not issubclass(OwnedJournalLock, base):
        base.register(OwnedJournalLock)


def open_store(url: str | Path, create: str | Path | None = None) -> Store:
    """Open (and create if needed) the storage at ``url``; a clear :class:`StorageError` if it cannot be.

    Called before any model or data work: a wrong scheme, a missing or unwritable folder, a
    missing PostgreSQL driver or an unreachable server fail here. ``create``: the one folder
    that may be made for a journal / SQLite file (e.g. the report folder the user named).
    """
    # deferred: optuna costs start-up until a store is opened (as above)
    from optuna.storages import InMemoryStorage, JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

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
            if _supports_symlinks(folder):
                _register_lock_base()
                journal_lock: OwnedJournalLock | JournalFileOpenLock = OwnedJournalLock(path)
            else:                      # SMB/CIFS, exFAT: Optuna's O_EXCL lock file works there
                journal_lock = JournalFileOpenLock(str(path))
            backend = JournalFileBackend(str(path), lock_obj=journal_lock)
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
        import psycopg2  # noqa: F401  # deferred: only PostgreSQL stores need the driver; imported to check it is there
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
