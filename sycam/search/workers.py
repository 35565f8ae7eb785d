"""Worker identity and liveness: which RUNNING trials belong to a process that is gone?

A worker is named by a token ``host/pid/start/nonce`` (``start``: the process start time
from ``/proc``, so a reused pid is not mistaken for the old process). It keeps a **lease**
in the study (user attribute ``sycam.lease.<token>`` = the time of its last heartbeat),
renewed by a daemon thread. A worker is dead when

* it ran on this host and its process no longer exists (immediate: a search restarted
  after SIGKILL on the same machine takes over at once), or
* its lease is older than ``grace`` seconds (another host; clocks assumed NTP-synced).

Trials and enumeration claims of dead workers are reclaimed by the next worker that takes
the study's claim lock (:mod:`sycam.search.ledger`).
"""
from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass

from . import processes

LEASE_PREFIX = "sycam.lease."
DEFAULT_GRACE = 60.0
DEFAULT_HEARTBEAT = 10.0
_LIVE: set[str] = set()      # tokens of the workers running in this process


def new_token() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}/{pid}/{_start_of(pid)}/{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Token:
    host: str
    pid: int
    start: str

    @classmethod
    def parse(cls, token: str) -> "Token | None":
        parts = str(token).split("/")
        if len(parts) != 4 or not parts[1].isdigit():
            return None
        return cls(parts[0], int(parts[1]), parts[2])


def _start_of(pid: int) -> str:
    stat = processes.stat(pid)
    return stat[1] if stat else "0"


def process_gone(token: str) -> bool | None:
    """True/False for a worker of this host (by /proc), None when it ran elsewhere or is unknown."""
    t = Token.parse(token)
    if t is None or t.host != socket.gethostname():
        return None
    if t.pid == os.getpid():
        return token not in _LIVE          # an earlier worker of this very process
    stat = processes.stat(t.pid)
    start = stat[1] if stat else None
    if start is None:                       # no /proc: the pid alone tells only that it is gone
        try:
            os.kill(t.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return None
    return start != t.start


def is_dead(token: str | None, leases: dict, now: float | None = None, grace: float = DEFAULT_GRACE) -> bool:
    """Whether the worker ``token`` is gone (see the module docstring); no token counts as gone."""
    if not token:
        return True
    gone = process_gone(token)
    if gone is not None:
        return gone
    seen = leases.get(LEASE_PREFIX + token)
    if seen is None:
        return True
    return (time.time() if now is None else now) - float(seen) > grace


def leases_of(user_attrs: dict) -> dict:
    return {k: v for k, v in user_attrs.items() if k.startswith(LEASE_PREFIX)}


class Worker:
    """This process as a worker of one study: its token and a heartbeat thread renewing its lease."""

    def __init__(self, study, interval: float = DEFAULT_HEARTBEAT):
        self.token = new_token()
        self.study = study
        self.interval = float(interval)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def beat(self) -> None:
        self.study.set_user_attr(LEASE_PREFIX + self.token, time.time())

    def start(self) -> "Worker":
        _LIVE.add(self.token)
        self.beat()
        self._thread = threading.Thread(target=self._run, name="sycam-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:      # a transient storage error must not kill the search
                self.errors += 1

    def stop(self) -> None:
        _LIVE.discard(self.token)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "Worker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

