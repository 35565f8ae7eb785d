"""Where a study is written: names are not paths, missing folders are errors, a dead writer's
journal lock is broken at once (only when it is surely dead), folders without symlinks work."""
import errno
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

from sycam.cli import main
from sycam.search import processes
from sycam.search.storage import ClaimLock, OwnedJournalLock, StorageError, check_study_name, open_store

TOY = ["--model", "toy", "--data", "toy", "--size", "24"]


@pytest.mark.parametrize("name", ["../../../x", "/tmp/abs", "a/b", "..", ".", "", "a\\b", "tab\there"])
def test_study_names_are_names_not_paths(name):
    with pytest.raises(StorageError, match="study name|empty"):
        check_study_name(name)


@pytest.mark.parametrize("study", ["../../../escaped", "/tmp/sycam-absolute-study"])
def test_search_refuses_a_path_as_study_before_any_work(tmp_path, monkeypatch, capsys, study):
    monkeypatch.chdir(tmp_path)
    assert main(["search", *TOY, "--study", study]) == 2
    captured = capsys.readouterr()
    assert f"error: study name {study!r} is a path, not a name" in captured.err
    assert "Traceback" not in captured.out + captured.err
    assert not (tmp_path / "results").exists() and not Path("/tmp/sycam-absolute-study").exists()


def test_storage_folders_are_not_created_silently(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for url in ("sqlite:///missing_dir/x.db", "journal:missing_dir/x.journal", "missing_dir/x.db"):
        with pytest.raises(StorageError, match="folder missing_dir .* does not exist"):
            open_store(url)
        assert main(["search", *TOY, "--storage", url, "--out", "out"]) == 2
        assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "missing_dir").exists() and not (tmp_path / "out").exists()
    open_store("journal:new/out/study.journal", create="new/out").close()   # the report folder may be made
    assert (tmp_path / "new" / "out" / "study.journal").exists()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _hold(journal: Path, pid: int) -> Path:
    lock = Path(f"{journal}.lock")
    os.symlink(OwnedJournalLock.describe(pid, "held"), lock)
    return lock


def _forge(owner: str, **changes: str) -> str:
    """``owner`` with some of its fields (host, pid, boot, ns, start, token) replaced."""
    names = ("host", "pid", "boot", "ns", "start", "token")
    fields = dict(zip(names, map(str, OwnedJournalLock.parse(owner))))
    fields.update(changes)
    return ":".join(["sycam", *(fields[n] for n in names)])


@pytest.fixture
def sleeper():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child
    child.kill()
    child.wait()


def test_a_dead_writers_journal_lock_is_broken_at_once(tmp_path):
    journal = tmp_path / "s.journal"
    store = open_store(f"journal:{journal}")
    lock = _hold(journal, _dead_pid())
    started = time.monotonic()
    optuna.create_study(study_name="s", storage=store.optuna).optimize(lambda t: t.suggest_float("x", 0, 1), 2)
    assert time.monotonic() - started < 3          # Optuna's own lock waits 30 s before forcing it
    assert not lock.exists() and not os.path.islink(lock)


def test_a_killed_but_unreaped_writer_counts_as_dead(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}").exists() and \
                Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert OwnedJournalLock.dead(OwnedJournalLock.describe(child.pid, "t"))
    finally:
        child.wait()


def test_a_live_writers_lock_is_waited_for_then_broken_when_it_dies(tmp_path):
    journal = tmp_path / "w.journal"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _hold(journal, holder.pid)
        got = threading.Event()
        lock = OwnedJournalLock(journal)
        waiter = threading.Thread(target=lambda: (lock.acquire(), got.set()), daemon=True)
        waiter.start()
        assert not got.wait(0.8)                   # a live owner is respected
        holder.kill()
        holder.wait()
        assert got.wait(3)                         # and its lock broken as soon as it is dead
        assert os.readlink(f"{journal}.lock") == lock.owner()
        lock.release()
        assert not os.path.lexists(f"{journal}.lock")
    finally:
        holder.kill()
        holder.wait()


def test_an_unknown_owner_is_broken_after_the_grace_period(tmp_path):
    journal = tmp_path / "o.journal"
    Path(f"{journal}.lock").write_text("")        # a plain Optuna lock file: no owner to check
    lock = OwnedJournalLock(journal, grace=0.3)
    started = time.monotonic()
    lock.acquire()
    assert 0.3 <= time.monotonic() - started < 3
    lock.release()


def test_the_owner_names_host_boot_pid_namespace_and_start_time():
    lock = OwnedJournalLock("x.journal")
    host, pid, boot, ns, start, token = OwnedJournalLock.parse(lock.owner())
    assert (host, pid) == (socket.gethostname(), os.getpid())
    assert boot == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert ns == str(os.stat("/proc/self/ns/pid").st_ino)
    assert start == Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]     # field 22
    assert len(token) == 32 and OwnedJournalLock.parse(OwnedJournalLock("x.journal").owner())[5] != token


def test_a_reused_pid_is_dead_and_a_live_owner_is_not(sleeper):
    owner = OwnedJournalLock.describe(sleeper.pid, "t")
    assert not OwnedJournalLock.dead(owner)
    start = OwnedJournalLock.parse(owner)[4]
    assert OwnedJournalLock.dead(_forge(owner, start=str(int(start) - 1)))   # the pid is another process now


def test_owners_of_another_namespace_boot_or_host_get_the_grace_period(tmp_path):
    owner = OwnedJournalLock.describe(_dead_pid(), "t")
    assert OwnedJournalLock.dead(owner)
    ns = OwnedJournalLock.parse(owner)[3]
    for other in (_forge(owner, ns=str(int(ns) + 1)),                          # another container's pids
                  _forge(owner, boot="00000000-0000-0000-0000-000000000000"),  # before a reboot
                  _forge(owner, host="elsewhere"),
                  f"sycam:{socket.gethostname()}:{OwnedJournalLock.parse(owner)[1]}",   # the old format
                  "sycam:garbage", ""):
        assert not OwnedJournalLock.dead(other), other
    journal = tmp_path / "n.journal"
    os.symlink(_forge(owner, ns=str(int(ns) + 1)), f"{journal}.lock")
    lock = OwnedJournalLock(journal, grace=0.3)
    started = time.monotonic()
    lock.acquire()
    assert 0.3 <= time.monotonic() - started < 3
    lock.release()


def test_without_proc_only_host_and_pid_count(monkeypatch, sleeper):
    monkeypatch.setattr(processes, "read", lambda path: "")
    monkeypatch.setattr(processes, "pid_namespace", lambda: "")
    monkeypatch.setattr(processes, "stat", lambda pid: None)
    dead, live = OwnedJournalLock.describe(_dead_pid(), "t"), OwnedJournalLock.describe(sleeper.pid, "t")
    assert OwnedJournalLock.parse(dead)[2:5] == ("", "", "")
    assert OwnedJournalLock.dead(dead) and not OwnedJournalLock.dead(live)


def test_two_locks_in_one_process_never_release_each_others(tmp_path):
    journal = tmp_path / "t.journal"
    first, second = OwnedJournalLock(journal, grace=0.2), OwnedJournalLock(journal, grace=0.2)
    assert first.owner() != second.owner()
    first.acquire()
    second.acquire()                               # breaks first's lock after the grace period
    first.release()                                # first's lock is gone: second's stays
    assert os.readlink(f"{journal}.lock") == second.owner()
    second.release()
    assert not os.path.lexists(f"{journal}.lock")


def test_a_folder_without_symlinks_uses_optunas_open_lock(tmp_path, monkeypatch):
    def no_symlinks(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", no_symlinks)      # as on SMB/CIFS or exFAT
    store = open_store(f"journal:{tmp_path / 'smb.journal'}")
    assert isinstance(store.optuna._backend._lock, optuna.storages.journal.JournalFileOpenLock)
    study = optuna.create_study(study_name="s", storage=store.optuna)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), 2)
    assert len(study.trials) == 2 and not os.path.lexists(f"{tmp_path / 'smb.journal'}.lock")
    assert not [p for p in os.listdir(tmp_path) if "probe" in p]


@pytest.mark.parametrize("kind", ["journal", "sqlite", "memory"])
def test_a_stores_claim_lock_excludes_a_second_holder(tmp_path, kind):
    url = {"journal": f"journal:{tmp_path / 'b.journal'}", "sqlite": f"sqlite:///{tmp_path / 'b.db'}",
           "memory": "memory"}[kind]
    first = open_store(url)
    second = first if kind == "memory" else open_store(url)      # another worker of the same store
    assert isinstance(first.claim, ClaimLock)
    if kind == "journal":                                         # and Optuna's journal writes use ours
        assert isinstance(first.optuna._backend._lock, OwnedJournalLock)
    order = []

    def claim():
        with second.lock("s"):
            order.append("second")

    with first.lock("s"):
        waiting = threading.Thread(target=claim)
        waiting.start()
        time.sleep(0.3)
        order.append("first done")
    waiting.join(10)
    assert order == ["first done", "second"]
    first.close()
    second.close()
