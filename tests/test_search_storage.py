"""Where a study is written: names are not paths, missing folders are errors, a dead writer's
journal lock is broken at once."""
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
from sycam.search.storage import OwnedJournalLock, StorageError, check_study_name, open_store

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
    os.symlink(f"sycam:{socket.gethostname()}:{pid}", lock)
    return lock


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
        assert OwnedJournalLock.dead(f"sycam:{socket.gethostname()}:{child.pid}")
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
        assert os.readlink(f"{journal}.lock") == OwnedJournalLock.owner()
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
