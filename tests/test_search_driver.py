"""The search engine on the toy problem through its one entry point (``sycam.search.run``): grammar
encoding, budget, dedupe, workers, resume, pruning, one shared value cache."""
import random
import threading
import warnings

import optuna
import pytest
import torch
from optuna.trial import TrialState

from sycam.errors import UnknownNameError
from sycam.evidence.sets import EvidenceSet
from sycam.grammar import parse
from sycam.grammar.ast import complexity
from sycam.search import Options, Problem, run
from sycam.search.driver import SearchError, make_sampler, open_study
from sycam.search.evaluate import Evaluator
from sycam.search.ledger import INFO, WORKER, expression_key, info, is_evaluation
from sycam.search.objectives import ObjectiveError, parse_objectives
from sycam.search.optuna_space import EncodingError, GrammarSpace
from sycam.search.pruning import WilcoxonPruner
from sycam.search.space import SearchSpace
from sycam.search.storage import StorageError, open_store, parse_url
from sycam.search.toy import toy_problem

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = SearchSpace(max_size=9)


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    model, batch, layer = toy_problem(20)
    evidence = EvidenceSet.capture(model, batch, [layer], needs=SPACE.evidence_terms)
    return model, batch, layer, evidence


def problem(store, toy, name="s", space=SPACE, metrics=("energy_pointing_game",)):
    model, batch, layer, evidence = toy
    return Problem(model, [layer], batch, space=space, objectives=list(metrics), storage=store, study=name,
                   evidence=evidence)


def search(store, toy, name="s", budget=60, fidelity=0, strategy="both", enumerate_size=3, seed=0,
           metrics=("energy_pointing_game",), stop=None, **kw):
    """One worker through the entry point (the CLI's path)."""
    opts = Options(strategy=strategy, budget=budget, enumerate_size=enumerate_size, batch=8, seed=seed,
                   fidelity=fidelity, probe=6, **kw)
    return run(problem(store, toy, name, metrics=metrics), opts, stop=stop)


def opened(store, toy, name):
    """The study as the entry point makes it (seeds enqueued), with nothing evaluated yet."""
    halt = threading.Event()
    halt.set()
    result = search(store, toy, name=name, stop=halt)
    assert result.summary.reason == "stopped" and result.summary.evaluated == 0
    return result.study


def evaluations(study):
    return [t for t in study.get_trials(deepcopy=False) if is_evaluation(t)]


# ---------------------------------------------------------------------------------- grammar space
def test_grammar_space_decodes_only_candidates_and_round_trips():
    grammar = GrammarSpace(SPACE)
    rng = random.Random(0)
    sizes = set()
    for _ in range(300):
        expr, dists = grammar.decode_with(lambda n, c: rng.choice(c), lambda n, lo, hi: rng.randint(lo, hi))
        assert SPACE.why_not(expr) is None
        params, _ = grammar.params(expr)
        assert grammar.decode(params) == expr
        sizes.add(expr.size)
    assert min(sizes) <= 2 and max(sizes) == SPACE.max_size      # the size budget is used, never exceeded
    for name, cand in SearchSpace().seeds().items():             # every gradient seed is a trial of the grammar
        params, _ = GrammarSpace(SearchSpace()).params(cand)
        assert GrammarSpace(SearchSpace()).decode(params) == cand, name


def test_grammar_space_rejects_what_it_cannot_produce():
    grammar = GrammarSpace(SPACE)
    with pytest.raises(EncodingError, match="not a candidate"):
        grammar.params(parse("sqrt(G)"))                         # sqrt is not an operator of the space
    params, _ = grammar.params(parse("mean(G, hw)"))
    params["r:bk"] = "no-such-production"
    with pytest.raises(EncodingError, match="not a production"):
        grammar.decode(params)


def test_size_budget_bounds_every_tpe_suggestion():
    grammar = GrammarSpace(SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(50):
        t = study.ask()
        expr = grammar.suggest(t)
        budget = [v for k, v in t.params.items() if k.startswith("size:")]
        assert expr.size <= (budget[0] if budget else SPACE.max_size)
        study.tell(t, 0.0)


# ---------------------------------------------------------------------------------- validation
def test_bad_objectives_and_storage_urls_fail_before_work():
    with pytest.raises(UnknownNameError, match="pointing_game"):
        parse_objectives(["pointing_gme"])
    with pytest.raises(ObjectiveError, match="size alone"):
        parse_objectives(["size"])
    with pytest.raises(ObjectiveError, match="twice"):
        parse_objectives(["iou", "iou"])
    assert parse_objectives(["pointing_game:tolerance=7"])[0].metric().tolerance == 7
    with pytest.raises(StorageError, match="unsupported storage scheme"):
        parse_url("mysql://u@h/db")
    with pytest.raises(StorageError, match="cannot tell"):
        parse_url("study.txt")
    with pytest.raises(StorageError, match="cannot connect"):
        open_store("postgresql+psycopg2://nobody:secret@127.0.0.1:9/none")   # nothing listens on port 9
    with pytest.raises(SearchError, match="strategy"):
        Options(strategy="anneal")


def test_a_study_with_other_settings_is_refused(tmp_path):
    store = open_store(f"journal:{tmp_path / 's.journal'}")
    sampler = make_sampler("tpe", 0, 1)
    open_study(store, "x", {"metric": "pointing_game", "layers": ["feat"]}, ["maximize"], sampler)
    open_study(store, "x", {"metric": "pointing_game", "layers": ["feat"]}, ["maximize"], sampler)   # same: fine
    with pytest.raises(SearchError, match=r"layers: stored \[\"feat\"\], now \[\"conv\"\]"):
        open_study(store, "x", {"metric": "pointing_game", "layers": ["conv"]}, ["maximize"], sampler)
    with pytest.raises(SearchError, match="optimises"):
        open_study(store, "x", {"metric": "pointing_game", "layers": ["feat"]}, ["minimize"], sampler)


# ---------------------------------------------------------------------------------- one worker
def test_budget_seeds_enumeration_and_tpe_share_one_study(toy):
    store = open_store("memory")
    result = search(store, toy, budget=70, enumerate_size=2)
    summary = result.summary
    study = result.study
    ev = evaluations(study)
    keys = [info(t)["key"] for t in ev]
    assert summary.reason == "budget" and len(ev) == 70
    assert len(set(keys)) == len(keys)                           # no expression evaluated twice
    sources = {info(t)["source"] for t in ev}
    assert {"seed", "enumerate"} <= sources and sources & {"optuna", "random"}
    seeds = {info(t)["seed"]: t for t in ev if info(t)["source"] == "seed"}
    assert set(seeds) == set(SPACE.seeds()) and all(t.state == TrialState.COMPLETE for t in seeds.values())
    grammar = GrammarSpace(SPACE)
    for t in ev:                                                 # every trial's parameters give its expression
        assert to_key(grammar.decode(t.params)) == info(t)["key"]
    dups = [t for t in study.get_trials(deepcopy=False) if "duplicate_of" in info(t)]
    for t in dups:                                               # a duplicate names an evaluated owner
        assert t.state == TrialState.PRUNED and info(t)["key"] in set(keys)


def to_key(expr):
    return expression_key(SPACE, expr)


def test_enumerated_candidates_are_not_re_evaluated_by_tpe_or_seeds(toy):
    store = open_store("memory")
    ev = evaluations(search(store, toy, budget=150, enumerate_size=3).study)
    by_key = {}
    for t in ev:
        by_key.setdefault(info(t)["key"], []).append(info(t)["source"])
    assert all(len(v) == 1 for v in by_key.values())
    # a proposal equal to an enumerated candidate up to a positive factor is the same key
    assert to_key(parse("2 * G")) == to_key(parse("G"))
    assert any(s == ["enumerate"] for s in by_key.values())


def test_wilcoxon_prunes_on_few_images_but_never_a_seed(toy):
    store = open_store("memory")
    result = search(store, toy, budget=120, fidelity=6, enumerate_size=4)
    summary = result.summary
    ev = evaluations(result.study)
    pruned = [t for t in ev if t.state == TrialState.PRUNED and "invalid" not in info(t)]
    assert summary.pruned > 0 and pruned
    assert all(info(t)["source"] != "seed" for t in pruned)
    for t in pruned:                          # stopped after the working subset: its per-image reports only
        assert set(t.intermediate_values) <= set(result.working) and t.values is None
    assert set(range(6)) <= set(result.working) < set(range(20))
    best = result.study.best_trial            # a complete trial reports every image (the pruner's incumbent)
    assert set(best.intermediate_values) == set(range(20))
    # the staged score of the winner (working subset first, then the rest) is its score on every image
    evidence = toy[3]
    whole = Evaluator(evidence, SPACE, "energy_pointing_game").score([parse(info(best)["expr"])]).metric_mean
    assert best.values[0] == pytest.approx(float(whole[0]), abs=1e-6)


def test_multi_objective_records_each_expressions_own_scores(toy):
    """A two-objective run records, for every evaluated expression, its energy pointing game on every
    image (the Evaluator's score of its text) and its complexity; the front Optuna keeps is built
    from those values, so it holds the best-scoring expression and the smallest one evaluated."""
    store = open_store("memory")
    result = search(store, toy, budget=50, metrics=["energy_pointing_game", "size"], enumerate_size=3)
    trials = [t for t in evaluations(result.study) if t.values is not None]
    assert len(trials) >= 20
    exprs = [parse(info(t)["expr"]) for t in trials]
    whole = Evaluator(toy[3], SPACE, "energy_pointing_game").score(exprs).metric_mean
    for t, e, score in zip(trials, exprs, whole.tolist()):
        assert t.values[0] == pytest.approx(score, abs=1e-6), info(t)["expr"]
        assert t.values[1] == complexity(e) == e.size
    front = {info(t)["expr"] for t in result.study.best_trials}
    best = max(trials, key=lambda t: (t.values[0], -t.values[1]))
    smallest = min(trials, key=lambda t: (t.values[1], -t.values[0]))
    assert info(best)["expr"] in front and info(smallest)["expr"] in front


# ---------------------------------------------------------------------------------- several workers, restarts
def test_two_workers_share_the_budget_without_duplicates(toy, tmp_path):
    store = open_store(f"journal:{tmp_path / 'w.journal'}")
    results = {}

    def worker(seed):
        results[seed] = search(store, toy, name="w", budget=90, seed=seed)
    threads = [threading.Thread(target=worker, args=(seed,)) for seed in (1, 2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    a, b = results[1], results[2]
    ev = evaluations(a.study)
    keys = [info(t)["key"] for t in ev]
    assert len(ev) == 90 and len(set(keys)) == 90
    workers = {t.user_attrs.get(WORKER) for t in ev}
    assert {a.summary.worker, b.summary.worker} <= workers       # both did part of the work
    assert not [t for t in a.study.get_trials(deepcopy=False) if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_resume_continues_the_same_study(toy, tmp_path):
    url = f"journal:{tmp_path / 'r.journal'}"
    first = search(open_store(url), toy, name="r", budget=40)
    before = {t.number: (info(t)["key"], t.values) for t in evaluations(first.study)}
    second = search(open_store(url), toy, name="r", budget=100)
    assert second.summary.reason == "budget" and not second.created
    after = evaluations(second.study)
    assert len(after) == 100 and len({info(t)["key"] for t in after}) == 100
    now = {t.number: (info(t)["key"], t.values) for t in after}
    assert all(now[n] == v for n, v in before.items())           # nothing evaluated earlier changed or vanished
    assert sum(info(t)["source"] == "seed" for t in after) == len(SPACE.seeds())   # seeds enqueued once


def test_trials_of_a_dead_worker_are_retried_once(toy, tmp_path):
    import subprocess
    import sys

    url = f"journal:{tmp_path / 'd.journal'}"
    study = opened(open_store(url), toy, "d")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    dead = f"{socket.gethostname()}/{int(gone.stdout)}/1/abc"     # a finished process of this host
    grammar = GrammarSpace(SPACE)
    cand = parse("relu(G) * A")
    while study.get_trials(states=(TrialState.WAITING,)):       # the seeds: done by the (dead) worker
        s = study.ask()
        study.tell(s, 0.0)
    params, _ = grammar.params(cand)
    study.enqueue_trial(params)
    t = study.ask()                                               # the dead worker had suggested its candidate...
    t.set_user_attr(WORKER, dead)
    assert grammar.suggest(t) == cand
    t.set_user_attr(INFO, {"expr": "relu(G) * A", "key": to_key(cand), "size": cand.size, "source": "optuna"})
    result = search(open_store(url), toy, name="d", budget=30)
    trials = study.get_trials(deepcopy=False)
    old = trials[t.number]
    assert old.state == TrialState.FAIL
    retry = [x for x in trials if info(x).get("retry_of") == t.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and info(retry[0])["key"] == to_key(cand)
    assert result.summary.retried == 1
    assert sum(info(x).get("key") == to_key(cand) for x in evaluations(study)) == 1


def test_a_small_space_is_exhausted_not_searched_forever(toy):
    store = open_store("memory")
    tiny = SearchSpace(operators="mean:hw,max:hw", terminals="A,G", constants="", max_size=2, result="weights")
    result = run(problem(store, toy, "tiny", space=tiny), Options(budget=500, enumerate_size=2, batch=8, probe=6))
    summary, study = result.summary, result.study
    # four candidates exist: mean(A, hw), mean(G, hw) (= the gradcam seed), max(A, hw), max(G, hw)
    assert summary.reason == "exhausted"
    assert sorted(info(t)["expr"] for t in evaluations(study)) == ["max(A, hw)", "max(G, hw)", "mean(A, hw)",
                                                                   "mean(G, hw)"]


def test_fast_wilcoxon_pruner_decides_like_optunas():
    """Same decisions as optuna.pruners.WilcoxonPruner on clear cases, without the permutation test."""
    import time

    study = optuna.create_study(direction="maximize")
    best = optuna.trial.create_trial(value=0.8, intermediate_values={i: 0.8 + 0.01 * (i % 3) for i in range(10)})
    study.add_trial(best)
    worse = optuna.trial.create_trial(value=0.0, intermediate_values={i: 0.2 + 0.01 * (i % 2) for i in range(10)})
    close = optuna.trial.create_trial(value=0.0, intermediate_values={i: 0.8 + 0.01 * ((i + 1) % 3) for i in range(10)})
    tied = optuna.trial.create_trial(value=0.0, intermediate_values={i: float(i % 2) for i in range(10)})
    ours = WilcoxonPruner(p_threshold=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = optuna.pruners.WilcoxonPruner(p_threshold=0.1)
        for t in (worse, close, tied):
            assert ours.prune(study, t) == theirs.prune(study, t)
    assert ours.prune(study, worse) and not ours.prune(study, close)
    t0 = time.perf_counter()
    for _ in range(20):
        ours.prune(study, tied)
    assert time.perf_counter() - t0 < 1.0


def test_a_queued_trial_killed_before_its_parameters_is_retried_whole(toy, tmp_path):
    import socket
    import subprocess
    import sys

    url = f"journal:{tmp_path / 'q.journal'}"
    study = opened(open_store(url), toy, "q")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = f"{socket.gethostname()}/{int(gone.stdout)}/1/abc"
    while study.get_trials(states=(TrialState.WAITING,)):
        study.tell(study.ask(), 0.0)
    cand = parse("A * G / sum(A, hw)")
    params, _ = GrammarSpace(SPACE).params(cand)
    study.enqueue_trial(params, user_attrs={INFO: {"expr": "A * G / sum(A, hw)", "key": to_key(cand),
                                                   "size": cand.size, "source": "mutation"}})
    t = study.ask()                              # popped by a worker that died before suggesting anything
    t.set_user_attr(WORKER, dead)
    assert t.params == {}
    search(open_store(url), toy, name="q", budget=20)
    retry = [x for x in study.get_trials(deepcopy=False) if info(x).get("retry_of") == t.number]
    assert len(retry) == 1 and is_evaluation(retry[0])
    assert info(retry[0])["expr"] == "A * G / sum(A, hw)" and "queued_as" not in info(retry[0])


# ---------------------------------------------------------------------------------- one wiring
def test_the_cli_calls_the_same_entry_point_and_the_old_engine_is_gone(tmp_path, monkeypatch):
    import importlib

    import sycam.search
    from sycam.cli import main

    calls = []

    def spy(problem, options=None, **kw):
        calls.append((problem, options))
        return run(problem, options, **kw)
    monkeypatch.setattr(sycam.search, "run", spy)
    rc = main(["--threads", "1", "search", "--model", "toy", "--data", "toy", "--size", "12", "--budget", "12",
               "--enumerate-size", "2", "--fidelity", "4", "--no-report", "--study", "cli",
               "--storage", f"journal:{tmp_path / 'cli.journal'}"])
    assert rc == 0 and len(calls) == 1
    job, opts = calls[0]
    assert isinstance(job, Problem) and job.study == "cli" and opts.budget == 12 and opts.fidelity == 4
    study = optuna.load_study(study_name="cli", storage=open_store(f"journal:{tmp_path / 'cli.journal'}").optuna)
    assert len(evaluations(study)) == 12
    for gone in ("sycam.search.synth", "sycam.search.correctness"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(gone)
    assert not hasattr(Evaluator, "score_staged")
