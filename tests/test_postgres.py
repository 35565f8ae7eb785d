"""Two ``sycam search`` workers share one study on a real PostgreSQL server.

The fixture makes a throwaway cluster (initdb) in a temporary folder, starts it on a free
port and creates a database. When the server binaries (Debian: ``apt-get install -y postgresql``)
or the driver (``pip install psycopg2-binary``) are missing it skips with the reason, or fails
under ``SYCAM_REQUIRE_POSTGRES=1`` (set by ``.ci/run``, which installs the server).
"""
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

from sycam.search.ledger import WORKER, info, is_evaluation
from sycam.search.storage import open_store


def _pg_bin():
    found = shutil.which("initdb")
    dirs = ([os.path.dirname(os.path.realpath(found))] if found else []) + sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for d in dirs:
        if os.path.exists(os.path.join(d, "initdb")) and os.path.exists(os.path.join(d, "pg_ctl")):
            return d
    return None


def _unavailable(reason):
    """Skip on a developer's machine; fail where the server is promised (``.ci/run`` sets the flag)."""
    if os.environ.get("SYCAM_REQUIRE_POSTGRES"):
        pytest.fail(reason)
    pytest.skip(reason)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    bindir = _pg_bin()
    if bindir is None:
        _unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found; "
                     "install them: apt-get install -y postgresql")
    try:
        import psycopg2
    except ImportError:
        _unavailable("the PostgreSQL driver is missing: pip install psycopg2-binary")
    root = tempfile.mkdtemp(prefix="sycam-pg-")
    prefix = []
    if os.geteuid() == 0:                      # initdb refuses to run as root: run the server as 'postgres'
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no 'postgres' user to run the server as")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, log, port = os.path.join(root, "data"), os.path.join(root, "server.log"), _free_port()

    def pg(*args):
        return subprocess.run(prefix + list(args), capture_output=True, text=True, timeout=120)

    r = pg(os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
    assert r.returncode == 0, r.stderr
    opts = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=50")
    r = pg(os.path.join(bindir, "pg_ctl"), "-D", data, "-l", log, "-w", "-t", "60", "-o", opts, "start")
    assert r.returncode == 0, r.stderr + open(log).read()
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE sycam")
        conn.close()
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/sycam"
    finally:
        pg(os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_the_claim_lock_excludes_across_connections(postgres):
    store_a, store_b = open_store(postgres), open_store(postgres)
    held = threading.Event()
    spans = {}

    def first():
        with store_a.lock("s"):
            spans["a"] = time.monotonic()
            held.set()
            time.sleep(0.5)
            spans["a_end"] = time.monotonic()

    th = threading.Thread(target=first)
    th.start()
    held.wait(10)
    with store_b.lock("s"):                # another connection must wait for the first to let go
        spans["b"] = time.monotonic()
    th.join()
    assert spans["b"] >= spans["a_end"]
    with store_b.lock("other-study"):       # a lock per study
        pass


def test_two_workers_share_one_study_without_duplicates(postgres):
    budget = 50
    cmd = [sys.executable, "-m", "sycam.cli", "--threads", "1", "search", "--model", "toy", "--data", "toy",
           "--size", "24", "--budget", str(budget), "--enumerate-size", "2", "--batch", "8", "--fidelity", "4",
           "--no-report", "--study", "pg", "--storage", postgres]
    workers = [subprocess.Popen(cmd + ["--seed", str(i)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i in (1, 2)]
    try:
        outs = [w.communicate(timeout=600)[0] for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGKILL)
    assert [w.returncode for w in workers] == [0, 0], outs
    study = optuna.load_study(study_name="pg", storage=open_store(postgres).optuna)
    trials = study.get_trials(deepcopy=False)
    ev = [t for t in trials if is_evaluation(t)]
    keys = [info(t)["key"] for t in ev]
    assert len(ev) == budget and len(set(keys)) == budget      # the shared budget, each expression once
    tokens = {t.user_attrs.get(WORKER) for t in ev}
    assert len(tokens) == 2                                     # both workers evaluated part of it
    assert sum(info(t).get("source") == "seed" for t in ev) == 7    # seeds enqueued once, not per worker
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    owners = {info(t)["key"]: t.number for t in ev}
    for t in trials:                                            # duplicates point at the evaluation of their key
        if "duplicate_of" in info(t):
            assert info(t)["key"] in owners
