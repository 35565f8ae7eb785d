"""A search killed with SIGINT, then with SIGKILL, resumes with nothing lost and nothing evaluated twice."""
import os
import signal
import subprocess
import sys
import time

import optuna
from optuna.trial import TrialState

from sycam.search.ledger import info, is_evaluation
from sycam.search.storage import open_store

BUDGET = 240     # a fast search must still be running when the test interrupts it


def command(journal):
    return [sys.executable, "-m", "sycam.cli", "--threads", "1", "search", "--model", "toy", "--data", "toy",
            "--size", "24", "--budget", str(BUDGET), "--enumerate-size", "3", "--batch", "8", "--fidelity", "4",
            "--no-report", "--study", "k", "--storage", f"journal:{journal}"]


def trials(journal):
    try:
        study = optuna.load_study(study_name="k", storage=open_store(f"journal:{journal}").optuna)
    except KeyError:
        return []
    return study.get_trials(deepcopy=True)


def done(ts):
    return {t.number: (info(t)["key"], t.state, t.values) for t in ts if is_evaluation(t)}


def wait_for(journal, proc, evaluated, running=False, timeout=180):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, "the search ended before it could be interrupted"
        ts = trials(journal)
        if len(done(ts)) >= evaluated and (not running or any(t.state == TrialState.RUNNING for t in ts)):
            return
        time.sleep(0.3)
    raise AssertionError("the search did not get far enough")


def test_sigint_then_sigkill_then_resume(tmp_path):
    journal = tmp_path / "k.journal"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    # 1. SIGINT: the worker finishes its batch, gives back what it holds and exits with 130
    p = subprocess.Popen(command(journal), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    wait_for(journal, p, 25)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 130, out
    after_int = trials(journal)
    assert not [t for t in after_int if t.state == TrialState.RUNNING]
    kept = done(after_int)
    assert 25 <= len(kept) < BUDGET

    # 2. resume, then SIGKILL while trials are running (TPE phase: past enumeration)
    p = subprocess.Popen(command(journal), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    wait_for(journal, p, max(len(kept) + 20, 85), running=True)
    p.kill()
    p.wait(timeout=30)
    at_kill = trials(journal)
    killed = [t for t in at_kill if t.state == TrialState.RUNNING]
    assert all(done(at_kill)[n] == v for n, v in kept.items())

    # 3. resume to the end
    r = subprocess.run(command(journal), capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    final = trials(journal)
    ev = done(final)
    keys = [k for k, _, _ in ev.values()]
    assert len(ev) == BUDGET and len(set(keys)) == BUDGET          # nothing evaluated twice
    snapshot = done(at_kill)
    assert all(ev[n] == v for n, v in snapshot.items())           # nothing finished before the kill was lost
    assert not [t for t in final if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    by_number = {t.number: t for t in final}
    print(f"SIGINT after {len(kept)}, SIGKILL with {len(killed)} running trials")
    for t in killed:                                               # a trial killed while running was retried once
        assert by_number[t.number].state == TrialState.FAIL
        if info(t).get("key") and "duplicate_of" not in info(t):
            retries = [x for x in final if info(x).get("retry_of") == t.number]
            assert len(retries) == 1 and is_evaluation(retries[0]) and info(retries[0])["key"] == info(t)["key"]
