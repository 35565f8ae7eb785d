"""The search's one entry point: ``run(problem, options) -> SearchResult``.

    problem = Problem(model, ["features.3"], working=train, held_out=held, objectives=["pointing_game"])
    result = run(problem, Options(budget=300, fidelity=8))
    result.best.text, result.best.values

A :class:`Problem` is what is searched (model, layers, working images, held-out images or
none, space, objectives, seeds) and where its study lives (storage, study name);
:class:`~sycam.search.driver.Options` is how this worker searches (budget, strategy,
sampler, stages, an optional ``threshold`` with ``stop="first"``). :func:`run` checks what
needs no model, opens or resumes the study (its settings refuse a different problem),
captures the working images' evidence once and runs one worker of
:class:`~sycam.search.driver.Search`: the seeds, bottom-up enumeration and TPE as trials of
one Optuna study, scored in stages (the working subset first, the Wilcoxon pruner, the
counterexamples that join the subset). The CLI (``sycam search``), the experiments and the
tests all call it; the held-out report is the caller's (:mod:`sycam.report.search_report`).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from torch import nn

from ..data.batch import Batch
from ..evidence.sets import EvidenceSet
from ..grammar.ast import Expr
from ..grammar.parser import parse
from ..grammar.printer import to_text
from ..metrics.base import Metric
from .driver import Options, Progress, RunSummary, Search, best_of, make_sampler, open_study, seed_enqueuer
from .evaluate import check_metric_inputs
from .ledger import INFO, WORKING
from .objectives import Objectives, ObjectiveSpec, parse_objectives
from .optuna_space import GrammarSpace
from .pruning import WilcoxonPruner
from .reexplain import REEXPLAINS, Reexplainer, transform_digest
from .space import SearchSpace
from .storage import Store, check_study_name, open_store

SETTINGS_VERSION = 3   # 3: complete trials record every image's score; the working subset is stored


@dataclass
class Problem:
    """What a search works on, and where its study lives.

    ``working``: the images the search scores candidates on; ``held_out``: images kept for the
    caller's report (never scored by the search); ``objectives``: metric names
    (``name:param=value``), specs or metric instances (a study records an instance by its
    name); ``seeds``: the seed methods enqueued first (None: every gradient seed in the space;
    ``{}``: none); ``storage``: a URL (:func:`~sycam.search.storage.open_store`) or an open
    store; ``settings``: more entries of the study's settings (model name, data, split), which
    a resume must repeat; ``resources``: callables metrics need (default ``model_fn`` =
    ``model`` = the model); ``evidence``: the working images' evidence if captured already
    (else :func:`run` captures it).
    """

    model: nn.Module
    layers: Sequence[str]
    working: Batch
    held_out: Batch | None = None
    space: SearchSpace = field(default_factory=SearchSpace)
    objectives: Sequence[str | ObjectiveSpec | Metric] = ("energy_pointing_game",)
    seeds: Mapping[str, Expr] | None = None
    storage: str | Store = "memory"
    study: str = "search"
    settings: Mapping[str, Any] = field(default_factory=dict)
    resources: Mapping[str, Any] | None = None
    evidence: EvidenceSet | None = None

    def __post_init__(self):
        if isinstance(self.layers, str):
            self.layers = [self.layers]

    def specs(self) -> list[ObjectiveSpec]:
        """The objectives, parsed and checked (unknown names, repeats, ``size`` alone)."""
        return parse_objectives(list(self.objectives))


@dataclass
class Candidate:
    """A scored candidate of the study (values: one per objective, on every working image)."""

    expr: Expr
    values: list[float]
    trial: int
    source: str = ""
    complete: bool = True     # False: stopped on the working subset (values: its mean there)

    @property
    def text(self) -> str:
        return to_text(self.expr)


@dataclass
class SearchResult:
    """What ``run`` did: the study (everything evaluated, by every worker and run), this run's
    summary, the best candidate, whether it reached the threshold, the working subset."""

    study: optuna.Study
    store: Store
    settings: dict
    objectives: list[ObjectiveSpec]
    seeds: dict[str, Expr]
    summary: RunSummary
    best: Candidate | None
    found: bool                     # the best candidate reaches options.threshold
    working: list[int]              # the working subset at the end (initial rows + counterexamples)
    created: bool                   # the study was made by this run (not resumed)
    evidence: EvidenceSet | None = None
    resources: dict[str, Any] = field(default_factory=dict)   # what the metrics were given (Reexplainer too)

    @property
    def directions(self) -> list[str]:
        return [s.direction for s in self.objectives]


def _settings(problem: Problem, specs: Sequence[ObjectiveSpec], fidelity: int) -> dict:
    return {"version": SETTINGS_VERSION, "space": problem.space.to_dict(), "objectives": [s.text for s in specs],
            "layers": list(problem.layers), "fidelity": fidelity, **dict(problem.settings)}


def _best(trials, best, direction: str) -> Candidate | None:
    """The best complete candidate; if none completed (every one stopped on the working subset,
    e.g. below a threshold), the best there, marked ``complete=False``."""
    values = list(best.values) if best is not None else None
    if best is None:
        sign = 1.0 if direction == "maximize" else -1.0
        scored = [(sign * sum(t.intermediate_values.values()) / len(t.intermediate_values), t) for t in trials
                  if t.intermediate_values and not {"duplicate_of", "invalid"} & set(t.user_attrs.get(INFO) or {})]
        if not scored:
            return None
        mean, best = max(scored, key=lambda p: p[0])
        values = [sign * mean]
    i = best.user_attrs.get(INFO) or {}
    return Candidate(parse(i["expr"]), values, best.number, i.get("seed") or i.get("source", ""),
                     complete=best.values is not None)


def run(problem: Problem, options: Options | None = None, *, progress: Callable[[Progress], None] | None = None,
        stop: threading.Event | None = None, log: Callable[[str], None] | None = None) -> SearchResult:
    """Search ``problem`` with ``options`` (one worker; run it again, or on other processes with the
    same storage and study, to resume or share the work)."""
    options = options or Options()
    log = log or (lambda msg: None)
    space = problem.space
    specs = problem.specs()
    check_study_name(problem.study)
    store = problem.storage if isinstance(problem.storage, Store) else open_store(problem.storage)
    # metrics that re-explain (robustness, equivariance, ADCC, sanity, axioms) get the candidates'
    # maps on evidence of the transformed inputs / randomised models, captured once per image set
    resources = dict(problem.resources) if problem.resources is not None else {"model_fn": problem.model,
                                                                                "model": problem.model}
    if any(s.metric().needs & REEXPLAINS for s in specs if not s.is_size) and "reexplainer" not in resources:
        resources["reexplainer"] = Reexplainer(problem.model, list(problem.layers), space.evidence_terms,
                                               relu=space.relu)
    for s in specs:
        if not s.is_size:
            check_metric_inputs(s.metric(), problem.working, resources, space, list(problem.layers))
    seeds = space.seeds() if problem.seeds is None else dict(problem.seeds)
    fidelity = options.fidelity if len(specs) == 1 else 0
    settings = _settings(problem, specs, fidelity)
    # the seeded noise samples, transforms and randomised models, fixed with the study
    transforms = {s.text: d for s in specs if not s.is_size
                  for d in [transform_digest(s.metric(), problem.working, problem.model)] if d is not None}
    if transforms:
        settings["transforms"] = transforms
    directions = [s.direction for s in specs]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = WilcoxonPruner(p_threshold=0.1) if fidelity else None
    study, created = open_study(store, problem.study, settings, directions,
                                make_sampler(options.sampler, options.seed, len(specs)), pruner,
                                seeds=seed_enqueuer(space, GrammarSpace(space), seeds))
    log(("new study" if created else "resuming study") + f" {problem.study!r}: {len(problem.working)} working images"
        + (f", {len(problem.held_out)} held out" if problem.held_out is not None else "")
        + f"; seeds {', '.join(seeds) or 'none'}")
    evidence = problem.evidence
    if evidence is None:
        t0 = time.perf_counter()
        evidence = EvidenceSet.capture(problem.model, problem.working, list(problem.layers),
                                       needs=space.evidence_terms)
        log(f"evidence of {len(evidence)} images at {', '.join(problem.layers)} in {time.perf_counter() - t0:.1f} s")
    objectives = Objectives(specs, evidence, space, fidelity=fidelity, resources=resources)
    probe = evidence.rows(range(min(options.probe, len(evidence))))
    search = Search(store, study, space, objectives, options, probe=probe, seeds=seeds, pruner=pruner,
                    progress=progress, stop=stop, log=log)
    summary = search.run()
    trials = study.get_trials(deepcopy=False)
    best = best_of(trials, directions, 0.0, objectives.first)                     # the threshold's judge
    chosen = best_of(trials, directions, options.tolerance, objectives.first)     # the simplest winner
    return SearchResult(study, store, settings, specs, seeds, summary, _best(trials, chosen, directions[0]),
                        search.reached(best),
                        list(study.user_attrs.get(WORKING) or objectives.working), created, evidence, resources)
