"""What ``/proc`` says of a process: its state and start time, this boot and pid namespace.

A pid alone does not name a process for long (pids are reused); the start time (clock ticks
since boot) with the pid does, within one boot and pid namespace. Everything here answers
'' or None where ``/proc`` is missing or unreadable, and the callers then fall back to the
pid alone.
"""
from __future__ import annotations

import os


def read(path: str) -> str:
    """The stripped text of a (/proc) file, '' where it cannot be read."""
    try:
        with open(path, errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of ``pid`` from ``/proc/<pid>/stat`` (fields 3 and 22); None if
    unreadable (no such process, or no /proc). The command name (field 2) may contain spaces
    and parentheses: the fields are counted after its last closing parenthesis."""
    fields = read(f"/proc/{pid}/stat").rsplit(")", 1)[-1].split()
    return (fields[0], fields[19]) if len(fields) > 19 else None


def boot_id() -> str:
    return read("/proc/sys/kernel/random/boot_id")


def pid_namespace() -> str:
    """The inode of this process's pid namespace, '' where there is none to read."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""
