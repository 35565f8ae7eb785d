"""The search driver: seeds, bottom-up enumeration and TPE, all as trials of one Optuna study.

A search is a named study in a store (:mod:`sycam.search.storage`). Its settings (space,
objectives, model, layers, data and split) are a study attribute: a restart or another
worker with different settings is refused. Candidates come from three sources, in order:

1. **waiting trials**: the seed methods of the space, enqueued once when the study is made
   (and trials of dead workers, enqueued again); popped by ``study.ask()``;
2. **enumeration** (strategy ``enumerate`` / ``both``): the search core's bottom-up
   enumerator (:class:`~sycam.search.enumerate.Enumerator`, equivalence-pruned on probe
   images) up to ``enumerate_size`` nodes. A chunk is claimed as a whole, scored in one
   batch and recorded as finished trials whose parameters are the grammar encoding of
   their expressions (:mod:`sycam.search.optuna_space`), so TPE learns from them;
3. **TPE** (strategy ``optuna`` / ``both``): batches of ``study.ask()`` trials whose
   candidates the sampler draws from the grammar-shaped define-by-run space
   (``constant_liar`` keeps parallel workers apart). TPE concentrates on good regions and
   then proposes known candidates again: each such repeat enqueues a *mutation* (one subtree
   grown again at random) instead, and when most recent proposals are repeats a batch is
   drawn uniformly from the grammar.

Every candidate is keyed by its canonical form; a key is evaluated at most once per study,
across workers and restarts (the claim protocol of :mod:`sycam.search.ledger`): a proposal
whose key is owned already becomes a pruned trial marked ``duplicate_of``.

**Stages** (one objective and ``fidelity`` k): a candidate is scored on the working subset
of images first (the first k, plus counterexamples) and Optuna's ``WilcoxonPruner`` stops
those significantly worse than the best trial there; the others are scored on every image.
When a candidate that passed on the working subset (beat the incumbent there, or reached
``threshold``) fails on all images, the images where it fails join the working subset
(:func:`~sycam.search.objectives.counterexamples`, CEGIS); the subset is a study attribute,
so workers share it and a resume keeps it. With ``threshold`` and ``stop="first"`` the
search ends once the best candidate's mean reaches the threshold.

The budget counts evaluations in the whole study, so re-running a killed search with the
same command finishes the remaining work, and several workers share one budget.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState, create_trial

from ..errors import SycamError
from ..evidence.sets import EvidenceSet
from ..grammar.ast import Expr
from ..grammar.printer import to_text
from .enumerate import Enumerator
from .ledger import INFO, SETTINGS, WORKER, WORKING, Ledger, View, expression_key, info
from .objectives import Objectives, Outcome, counterexamples
from .optuna_space import EncodingError, GrammarSpace
from .sampling import SnapshotSampler
from .selection import SE, parse_tolerance, winner
from .space import SearchSpace
from .storage import Store
from .workers import DEFAULT_GRACE, DEFAULT_HEARTBEAT, Worker

STRATEGIES = ("enumerate", "optuna", "both")
SAMPLERS = ("tpe", "nsga2", "random")
STOPS = ("budget", "first")
DEFAULT_ENUMERATE_SIZE = 5


class SearchError(SycamError, ValueError):
    """A search that cannot start or continue (settings of a stored study differ, bad options)."""


@dataclass
class Options:
    """How this worker searches (free to differ between workers and restarts)."""

    strategy: str = "both"
    budget: int | None = 500            # evaluations in the whole study
    seconds: float | None = None        # wall time of this run's search loop
    enumerate_size: int | None = None   # largest enumerated size (default 5, or max_size for "enumerate")
    batch: int = 16                     # TPE trials asked at once
    sampler: str = "tpe"
    seed: int | None = None
    chunk: int = 256                    # enumerated candidates per chunk
    grace: float = DEFAULT_GRACE        # seconds without heartbeat before another host's worker is dead
    heartbeat: float = DEFAULT_HEARTBEAT
    duplicate_rate: float = 0.75        # above this share of duplicates among recent TPE proposals,
                                        # the next batch is drawn uniformly from the grammar
    max_duplicates: int = 200           # repeats in a row with no new candidate nor mutation: exhausted
    fidelity: int = 0                   # initial working subset (images scored first; 0: no stages);
                                        # stored with the study settings by run(): a resume repeats it
    probe: int = 8                      # images the enumerator's equivalence oracle compares on
    threshold: float | None = None      # metric units, first objective: what a candidate must reach
    stop: str = "budget"                # "first": end once a candidate's mean reaches the threshold
    add: int = 2                        # counterexamples per failed candidate
    sympy: str = "before"               # the enumerator's sympy oracle: "before", "after" or "off"
    tolerance: str | float = SE         # the simplest winner within this of the best (sycam.search.selection)

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise SearchError(f"unknown strategy {self.strategy!r}; choose from {', '.join(STRATEGIES)}")
        if self.sampler not in SAMPLERS:
            raise SearchError(f"unknown sampler {self.sampler!r}; choose from {', '.join(SAMPLERS)}")
        if self.budget is not None and self.budget < 1:
            raise SearchError(f"the budget must be at least 1 candidate, not {self.budget}")
        if self.seconds is not None and self.seconds <= 0:
            raise SearchError(f"the time budget must be positive, not {self.seconds}")
        if self.budget is None and self.seconds is None:
            raise SearchError("give a budget: a number of candidates, a time limit, or both")
        if self.batch < 1 or self.chunk < 1:
            raise SearchError("batch and chunk sizes must be at least 1")
        if self.fidelity < 0 or self.probe < 1 or self.add < 0:
            raise SearchError("fidelity and counterexamples must be >= 0 and probe images >= 1")
        if self.stop not in STOPS:
            raise SearchError(f"stop must be one of {', '.join(STOPS)}, not {self.stop!r}")
        if self.threshold is not None and not math.isfinite(float(self.threshold)):
            raise SearchError(f"the threshold must be a finite number, not {self.threshold!r}")
        if self.stop == "first" and self.threshold is None:
            raise SearchError("stop='first' ends at the first candidate that reaches a threshold: give one")
        self.tolerance = parse_tolerance(self.tolerance)


@dataclass
class Progress:
    """What the engine reports after every batch (the one progress type of a search)."""

    done: int                     # evaluations in the whole study
    inflight: int
    budget: int | None
    phase: str
    best: str | None = None
    best_value: float | None = None
    duplicates: int = 0
    pruned: int = 0
    working: int = 0              # images in the working subset (grows by counterexamples)


@dataclass
class RunSummary:
    """What this run did (the study holds everything)."""

    reason: str
    evaluated: int = 0            # candidates this worker scored and recorded
    duplicates: int = 0
    pruned: int = 0
    invalid: int = 0
    retried: int = 0
    seconds: float = 0.0
    worker: str = ""
    phases: dict[str, int] = field(default_factory=dict)
    counterexamples: list[int] = field(default_factory=list)    # images this run added to the working subset


# ---------------------------------------------------------------------------------- study
def make_sampler(name: str, seed: int | None, n_objectives: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            # group=True would sample every group ever seen (one per tree path) on every trial:
            # seconds per trial after a few hundred trials; plain multivariate TPE stays ~O(trials).
            base = optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=seed)
        elif name == "nsga2":
            base = optuna.samplers.NSGAIISampler(seed=seed)
        else:
            base = optuna.samplers.RandomSampler(seed=seed)
    return SnapshotSampler(base)


def _canonical(settings: Mapping[str, Any]) -> dict:
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def settings_difference(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two settings dicts (top-level keys)."""
    a, b = _canonical(stored), _canonical(wanted)
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            sa, sb = json.dumps(a.get(key))[:120], json.dumps(b.get(key))[:120]
            out.append(f"{key}: stored {sa}, now {sb}")
    return out


def open_study(store: Store, name: str, settings: Mapping[str, Any], directions: Sequence[str],
               sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner | None = None,
               seeds: Callable[[optuna.Study], None] | None = None) -> tuple[optuna.Study, bool]:
    """Create the study or load it; refuse one made with other settings. ``seeds(study)`` runs
    once, when the study is new (under the claim lock). Returns (study, created)."""
    if not name or any(c in name for c in "\n\r\t") or len(name) > 200:
        raise SearchError(f"bad study name {name!r}")
    pruner = pruner or optuna.pruners.NopPruner()
    study = optuna.create_study(study_name=name, storage=store.optuna, sampler=sampler, pruner=pruner,
                                directions=list(directions), load_if_exists=True)
    have = [d.name.lower() for d in study.directions]
    if have != list(directions):
        raise SearchError(f"study {name!r} in {store.url} optimises {have}, not {list(directions)}; "
                          "use another --study or the same metrics")
    created = False
    with store.lock(name):
        stored = study.user_attrs.get(SETTINGS)
        if stored is None:
            if study.get_trials(deepcopy=False):
                raise SearchError(f"study {name!r} in {store.url} was not made by sycam search")
            study.set_user_attr(SETTINGS, _canonical(settings))
            if seeds is not None:
                seeds(study)
            created = True
        else:
            diff = settings_difference(stored, settings)
            if diff:
                raise SearchError(f"study {name!r} in {store.url} was made with other settings; resume it with "
                                  "the same ones or use another --study:\n  " + "\n  ".join(diff))
    return study, created


def seed_enqueuer(space: SearchSpace, grammar: GrammarSpace, seeds: Mapping[str, Expr]):
    """A ``seeds(study)`` callback for :func:`open_study`: enqueue each seed candidate once per key."""
    def enqueue(study: optuna.Study) -> None:
        seen: dict[str, dict] = {}
        for name, cand in seeds.items():
            key = expression_key(space, cand)
            if key in seen:
                seen[key]["also"] = seen[key].get("also", []) + [name]
                continue
            params, _ = grammar.params(cand)
            seen[key] = {"params": params, "info": {"expr": to_text(cand), "key": key, "size": cand.size,
                                                    "source": "seed", "seed": name}}
        for entry in seen.values():
            if "also" in entry:
                entry["info"]["also"] = entry.pop("also")
            study.enqueue_trial(entry["params"], user_attrs={INFO: entry["info"]})
    return enqueue


# ---------------------------------------------------------------------------------- driver
class _Incumbent:
    """What WilcoxonPruner reads from a study: its best trial and direction (fixed per batch)."""

    def __init__(self, best, direction):
        self._best, self.direction = best, direction

    @property
    def best_trial(self):
        if self._best is None:
            raise ValueError("no complete trial yet")
        return self._best


def best_of(trials, directions: Sequence[str], tolerance: str | float = 0.0, objective: int = 0):
    """The selected complete non-duplicate trial on objective ``objective`` (None if none): the
    simplest within ``tolerance`` of the best (:func:`sycam.search.selection.winner`; 0: the best)."""
    return winner(trials, directions, objective=objective, tolerance=tolerance)


class Search:
    """One worker of a study: ``Search(...).run()`` until the budget, the time or ``stop`` ends it."""

    def __init__(self, store: Store, study: optuna.Study, space: SearchSpace, objectives: Objectives,
                 options: Options, *, probe: EvidenceSet | None = None, seeds: Mapping[str, Expr] | None = None,
                 pruner: optuna.pruners.BasePruner | None = None, progress: Callable[[Progress], None] | None = None,
                 stop: threading.Event | None = None, log: Callable[[str], None] | None = None):
        self.store = store
        self.study = study
        self.name = study.study_name
        self.space = space
        self.grammar = GrammarSpace(space)
        self.objectives = objectives
        self.options = options
        self.probe = probe
        self.seeds = dict(seeds or {})
        self.pruner = pruner
        self.progress = progress
        self.stop = stop or threading.Event()
        self.log = log or (lambda msg: None)
        self.directions = objectives.directions
        self.summary = RunSummary("")
        self._tpe = study.sampler
        self._random = SnapshotSampler(optuna.samplers.RandomSampler(seed=options.seed))
        self._dup_streak = 0
        self._enumerated_all = False
        self._rng = random.Random(options.seed)
        self._recent: deque[bool] = deque(maxlen=32)     # recent TPE proposals: was it a duplicate?
        self._incumbent = None
        self._winner = None

    # ------------------------------------------------------------------ main loop
    def run(self) -> RunSummary:
        opts = self.options
        t0 = time.monotonic()
        deadline = None if opts.seconds is None else t0 + opts.seconds
        worker = Worker(self.study, interval=opts.heartbeat)
        self.token = worker.token
        self.summary.worker = worker.token
        self.ledger = Ledger(self.study, worker.token, opts.grace)
        chunks = self._enumeration() if opts.strategy in ("enumerate", "both") else None
        reason = ""
        worker.start()
        try:
            while not reason:
                if self.stop.is_set():
                    reason = "stopped"
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    reason = "time"
                    break
                with self.store.lock(self.name):
                    view = self._view()
                if opts.stop == "first" and self.reached(self._incumbent):
                    reason = "found"
                    break
                if opts.budget is not None and view.claimed >= opts.budget and not view.waiting:
                    reason = "budget"
                    break
                if view.waiting:
                    self._trial_batch("queued")
                elif chunks is not None:
                    chunk = next(chunks, None)
                    if chunk is None:
                        chunks = None
                        if self._enumerated_all:
                            reason = "exhausted"       # every candidate of the space, up to equivalence
                        elif opts.strategy == "enumerate":
                            reason = "enumerated"
                    else:
                        self._chunk(chunk)
                elif opts.strategy in ("optuna", "both"):
                    if self._dup_streak >= opts.max_duplicates:
                        reason = "exhausted"
                        break
                    self._trial_batch("optuna")
                else:
                    reason = "enumerated"
        finally:
            worker.stop()
            if self.summary.reason == "" and not reason:
                reason = "interrupted"
            self._abandon()
            self.summary.reason = reason
            self.summary.seconds = time.monotonic() - t0
        return self.summary

    def _view(self) -> View:
        """The study under the lock, after reaping the trials of dead workers."""
        view = self.ledger.view()
        if view.stale:
            failed = self.ledger.reap(view)
            if failed:
                self.summary.retried += len(failed)
                self.log(f"trials {failed} of stopped workers failed and queued again")
            view = self.ledger.view()
        # the strict best drives the pruner, the counterexamples and the threshold stop; the simplest
        # winner within the tolerance is what the progress shows (and what the result reports)
        self._incumbent = best_of(view.trials, self.directions, 0.0, self.objectives.first)
        self._winner = best_of(view.trials, self.directions, self.options.tolerance, self.objectives.first)
        stored = self.study.user_attrs.get(WORKING)
        if stored is not None and self.objectives.fidelity and list(stored) != self.objectives.working:
            self.objectives.set_working(stored)
        self._report(view, "")
        return view

    def reached(self, trial) -> bool:
        """Does this trial's first objective reach ``options.threshold`` (in the metric's direction)?"""
        t = self.options.threshold
        if t is None or trial is None or not trial.values:
            return False
        sign = 1.0 if self.directions[0] == "maximize" else -1.0
        return sign * trial.values[0] >= sign * t

    def _counterexamples(self, outcomes: Sequence[Outcome], seeds: Sequence[bool] = ()) -> None:
        """Images on which promising candidates failed join the working subset (stored in the study)."""
        if not self.objectives.fidelity:
            return
        best = self._incumbent
        inc = best.intermediate_values if best is not None else None
        sign = 1.0 if self.directions[0] == "maximize" else -1.0
        added: list[int] = []
        for j, o in enumerate(outcomes):
            if o.status != "complete" or (j < len(seeds) and seeds[j]):
                continue
            rows = counterexamples(o.steps, inc, self.objectives.working + added, sign=sign,
                                   threshold=self.options.threshold, add=self.options.add)
            added += [r for r in rows if r not in added]
        if not added:
            return
        with self.store.lock(self.name):
            stored = self.study.user_attrs.get(WORKING) or self.objectives.working
            rows = sorted(set(stored) | set(added))
            self.study.set_user_attr(WORKING, rows)
        self.objectives.set_working(rows)
        self.summary.counterexamples += added
        self.log(f"counterexamples: images {added} join the working subset ({len(rows)} images)")

    def _abandon(self) -> None:
        """Give back what this worker holds (its RUNNING trials are failed and queued again)."""
        try:
            with self.store.lock(self.name):
                view = Ledger(self.study, token="", grace=self.options.grace).view()
                mine = [t for t in view.stale if t.user_attrs.get(WORKER) == self.token]
                if mine:
                    view.stale = mine
                    failed = self.ledger.reap(view)
                    self.log(f"interrupted: trials {failed} queued again for the next run")
        except Exception as err:   # never hide the original error
            self.log(f"could not give back running trials ({err}); the next worker reclaims them")

    def _report(self, view: View, phase: str) -> None:
        if self.progress is None:
            return
        best = self._winner
        self.progress(Progress(view.done, view.inflight, self.options.budget, phase,
                               info(best).get("expr") if best else None,
                               best.values[0] if best else None,
                               self.summary.duplicates, self.summary.pruned,
                               len(self.objectives.working)))

    # ------------------------------------------------------------------ pruning
    def _pruner(self) -> Callable[[dict[int, float]], bool] | None:
        """The stage's rule on the working subset: with a threshold, stop a candidate whose mean
        there does not reach it (what CEGIS verifies on the other images); without, the Wilcoxon
        pruner against the incumbent's scores on the same images."""
        if self.pruner is None or not self.objectives.fidelity:
            return None
        sign = 1.0 if self.directions[0] == "maximize" else -1.0
        if self.options.threshold is not None:
            tau = sign * self.options.threshold
            return lambda steps: bool(steps) and sign * sum(steps.values()) / len(steps) < tau
        best = self._incumbent
        work = set(self.objectives.working)
        mine = {} if best is None else {s: v for s, v in best.intermediate_values.items() if s in work}
        if best is not None:     # compared on the working subset only (a complete trial has every image)
            best = create_trial(state=TrialState.COMPLETE, values=best.values, intermediate_values=mine)
        incumbent = _Incumbent(best, optuna.study.StudyDirection[self.directions[0].upper()])
        best_mean = sign * sum(mine.values()) / len(mine) if mine else math.inf

        def prune(steps: dict[int, float]) -> bool:
            if not steps or sign * sum(steps.values()) / len(steps) >= best_mean:
                return False     # no worse on average than the incumbent: the pruner never stops it
            ft = create_trial(state=TrialState.COMPLETE, value=0.0, intermediate_values=steps)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return bool(self.pruner.prune(incumbent, ft))
        return prune

    # ------------------------------------------------------------------ trials (queued and TPE)
    def _trial_batch(self, phase: str) -> None:
        opts = self.options
        with self.store.lock(self.name):
            view = self._view()
            fresh = 0 if phase == "queued" else (opts.batch if opts.budget is None
                                                 else max(0, opts.budget - view.claimed))
            n = min(opts.batch, view.waiting + fresh)
            if n <= 0:
                return
            random_batch = (phase == "optuna" and len(self._recent) >= 16
                            and sum(self._recent) > opts.duplicate_rate * len(self._recent))
            self.study.sampler = self._random if random_batch else self._tpe
            trials = []
            for _ in range(n):
                t = self.study.ask()
                t.set_user_attr(WORKER, self.token)
                trials.append(t)
        proposals = []
        snap = self.study.sampler if isinstance(self.study.sampler, SnapshotSampler) else None
        for t in trials:
            i = dict(t.user_attrs.get(INFO) or {})
            if snap is not None:
                snap.refresh(self.study)           # one read of the study per trial, not per parameter
            try:
                expr = self.grammar.suggest(t)
            except EncodingError as err:
                i["error"] = f"cannot decode: {err}"
                t.set_user_attr(INFO, i)
                self.study.tell(t, state=TrialState.FAIL)
                continue
            key = expression_key(self.space, expr)
            if i.get("key") and i["key"] != key:      # a queued trial whose parameters did not all survive
                i["queued_as"] = i.get("expr")
            i.update(expr=to_text(expr), key=key, size=expr.size)
            i.setdefault("source", "random" if random_batch else "optuna")
            proposals.append((t, expr, i))
        if snap is not None:
            snap.forget()
        self.study.sampler = self._tpe
        claimed = []
        with self.store.lock(self.name):
            view = self.ledger.view()
            for t, expr, i in proposals:
                owner = view.owner(i["key"])
                if owner is not None and owner != t.number:
                    i["duplicate_of"] = owner
                else:
                    view.owners[i["key"]] = t.number
                    claimed.append((t, expr, i))
                t.set_user_attr(INFO, i)
            mutated = 0
            if phase == "optuna":
                mutated = self._mutations(view, [expr for _, expr, i in proposals if "duplicate_of" in i])
        for t, _, i in proposals:
            if "duplicate_of" in i:
                self.study.tell(t, state=TrialState.PRUNED)
                self.summary.duplicates += 1
        if phase == "optuna":
            self._dup_streak = 0 if claimed or mutated else self._dup_streak + len(proposals)
            if not random_batch:
                self._recent.extend("duplicate_of" in i for _, _, i in proposals)
            elif claimed:
                self._recent.clear()
        if not claimed:
            return
        # seeds are the baselines of the report: never pruned on a few images
        outcomes: list[Outcome | None] = [None] * len(claimed)
        for is_seed in (True, False):
            idx = [j for j, (_, _, i) in enumerate(claimed) if (i.get("source") == "seed") == is_seed]
            if idx:
                prune = None if is_seed else self._pruner()
                for j, o in zip(idx, self.objectives.evaluate([claimed[j][1] for j in idx], prune)):
                    outcomes[j] = o
        for (t, _, i), o in zip(claimed, outcomes):
            for step, value in o.steps.items():
                t.report(value, step)
            self._tell(t, i, o)
        self.summary.phases[phase] = self.summary.phases.get(phase, 0) + len(claimed)
        self._counterexamples([o for o in outcomes if o is not None],
                              [i.get("source") == "seed" for _, _, i in claimed])

    def _mutations(self, view: View, repeated: Sequence[Expr], tries: int = 4) -> int:
        """For each repeated proposal, enqueue one new neighbour (a subtree grown again) so a sampler
        that keeps proposing known candidates still moves the search on (under the lock)."""
        room = len(repeated) if self.options.budget is None else max(0, self.options.budget - view.claimed)
        made = 0
        for expr in repeated[:room]:
            for _ in range(tries):
                new = self.grammar.mutate(expr, self._rng)
                key = expression_key(self.space, new)
                if view.owner(key) is None:
                    params, _ = self.grammar.params(new)
                    self.study.enqueue_trial(params, user_attrs={INFO: {"expr": to_text(new), "key": key,
                                                                         "size": new.size, "source": "mutation"}})
                    view.owners[key] = "queued"
                    view.inflight += 1
                    made += 1
                    break
        return made

    def _tell(self, trial, i: dict, o: Outcome) -> None:
        self.summary.evaluated += 1
        if o.status == "complete":
            if o.se == o.se:                           # stored only where defined (strict JSON)
                trial.set_user_attr(INFO, {**i, "se": o.se})
            self.study.tell(trial, o.values)
            return
        if o.status == "invalid":
            self.summary.invalid += 1
            trial.set_user_attr(INFO, {**i, "invalid": o.reason})
        else:
            self.summary.pruned += 1
        self.study.tell(trial, state=TrialState.PRUNED)

    # ------------------------------------------------------------------ enumeration
    def _enumeration(self):
        """Chunks of distinct candidates from the search core's enumerator (sizes <= enumerate_size)."""
        if self.probe is None:
            raise SearchError("enumeration needs probe evidence (a few working images)")
        size = self.options.enumerate_size
        if size is None:
            size = self.space.max_size if self.options.strategy == "enumerate" else DEFAULT_ENUMERATE_SIZE
        size = max(1, min(int(size), self.space.max_size))
        smallest = min(self.space.min_size(t) or 10 ** 9 for t in self.space.result_axes)
        if size < smallest:
            return
        try:
            space = self.space.replace(max_size=size)
        except SycamError:
            return
        enum = Enumerator(space, self.probe, chunk=self.options.chunk, sympy=self.options.sympy)
        for name, cand in self.seeds.items():
            if space.contains(cand):
                enum.register(name, cand)
        yield from enum.candidates()
        self._enumerated_all = size == self.space.max_size and enum.stop_reason == "max_size"

    def _chunk(self, candidates: list[Expr]) -> None:
        opts = self.options
        texts = [to_text(c) for c in candidates]
        cid = hashlib.sha1("\n".join(texts).encode()).hexdigest()[:16]
        keys = [expression_key(self.space, c) for c in candidates]
        with self.store.lock(self.name):
            view = self._view()
            if cid in view.chunks:
                return
            todo, seen = [], set()
            for c, k, text in zip(candidates, keys, texts):
                if view.owner(k) is None and k not in seen:
                    seen.add(k)
                    todo.append((c, k, text))
            room = len(todo) if opts.budget is None else max(0, opts.budget - view.claimed)
            partial = room < len(todo)
            todo = todo[:room]
            if not todo:
                if not partial:
                    self.ledger.finish_chunk(cid, 0)
                return
            self.ledger.claim_chunk(cid, [k for _, k, _ in todo])
        outcomes = self.objectives.evaluate([c for c, _, _ in todo], self._pruner())
        frozen = []
        for (c, k, text), o in zip(todo, outcomes):
            i = {"expr": text, "key": k, "size": c.size, "source": "enumerate"}
            try:
                params, dists = self.grammar.params(c)
            except EncodingError:
                params, dists = {}, {}
            if o.status == "invalid":
                i["invalid"] = o.reason
            elif o.status == "complete" and o.se == o.se:
                i["se"] = o.se
            state = TrialState.COMPLETE if o.status == "complete" else TrialState.PRUNED
            frozen.append((k, o, create_trial(state=state, values=o.values, params=params, distributions=dists,
                                              user_attrs={INFO: i, WORKER: self.token},
                                              intermediate_values=o.steps)))
        with self.store.lock(self.name):
            view = self.ledger.view()
            keep = [(k, o, f) for k, o, f in frozen if view.owner(k) in (None, f"chunk:{cid}")]
            self.study.add_trials([f for _, _, f in keep])
            if partial:
                self.ledger.release_chunk(cid)
            else:
                self.ledger.finish_chunk(cid, len(keep))
        self._counterexamples([o for _, o, _ in keep])
        for _, o, _ in keep:
            self.summary.evaluated += 1
            self.summary.pruned += o.status == "pruned"
            self.summary.invalid += o.status == "invalid"
        self.summary.phases["enumerate"] = self.summary.phases.get("enumerate", 0) + len(keep)
