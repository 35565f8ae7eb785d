"""Synthesis: search CAM expressions for the best score on a metric (SyCAM).

One entry point, :func:`run` (:mod:`~sycam.search.engine`): a :class:`Problem` (model, layers,
working and held-out images, space, objectives, seeds, storage and study name) and
:class:`Options` give a :class:`SearchResult`; progress is one :class:`Progress` type.

* :mod:`~sycam.search.space` - :class:`SearchSpace`: terminals, operators, constants, bounds,
  result type; from kwargs, CLI strings or a TOML/JSON file; validated up front.
* :mod:`~sycam.search.driver` - :class:`~sycam.search.driver.Search`, the engine: seeds,
  enumeration and TPE as trials of one resumable, multi-worker Optuna study, scored in stages.
* :mod:`~sycam.search.objectives` - what is optimised; the working subset, the pruner's
  per-image steps and the counterexamples (CEGIS) that join the subset.
* :mod:`~sycam.search.evaluate` - :class:`Evaluator` (candidates -> maps -> scores, batched) on an
  :class:`~sycam.evidence.sets.EvidenceSet` (captured once) through a
  :class:`~sycam.kernels.memo.Memo` (sub-term values, byte-bounded, shared by all metrics).
* :mod:`~sycam.search.equivalence` - sympy forms and observational keys (the equivalence oracle).
* :mod:`~sycam.search.enumerate` - :class:`Enumerator`: bottom-up, typed, by size.
* :mod:`~sycam.search.target` - reference maps of a known method, for rediscovery with the
  ``target_pearson`` metric (:mod:`sycam.metrics.target`), and the held-out check.
"""
from ..evidence.sets import EvidenceSet
from ..kernels.memo import CandidateMaps, Memo, ValueCache
from .driver import Options, Progress, SearchError
from .engine import Candidate, Problem, SearchResult, run
from .enumerate import Enumerator, LevelCounts, candidate_classes
from .evaluate import Evaluator, Scores
from .space import (
    DEFAULT_OPERATORS,
    GRADIENT_SEEDS,
    RESULTS,
    OpSpec,
    SearchSpace,
    SearchSpaceError,
    load_space,
    parse_operator,
)
from .target import pearson_to, reference_maps

__all__ = [
    "Candidate", "CandidateMaps", "DEFAULT_OPERATORS", "Enumerator", "EvidenceSet", "Evaluator", "GRADIENT_SEEDS",
    "LevelCounts", "Memo", "OpSpec", "Options", "Problem", "Progress", "RESULTS", "Scores", "SearchError",
    "SearchResult", "SearchSpace", "SearchSpaceError", "ValueCache", "candidate_classes", "load_space",
    "parse_operator", "pearson_to", "reference_maps", "run",
]
