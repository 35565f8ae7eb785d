"""Synthesis: enumerate CAM expressions and check them against a metric (SyCAM).

* :mod:`~sycam.search.space` - :class:`SearchSpace`: terminals, operators, constants, bounds,
  result type; from kwargs, CLI strings or a TOML/JSON file; validated up front.
* :mod:`~sycam.search.evaluate` - :class:`Evaluator` (candidates -> maps -> scores, batched) on an
  :class:`~sycam.evidence.sets.EvidenceSet` (captured once) through a
  :class:`~sycam.kernels.memo.Memo` (sub-term values, byte-bounded).
* :mod:`~sycam.search.equivalence` - sympy forms and observational keys (the equivalence oracle).
* :mod:`~sycam.search.enumerate` - :class:`Enumerator`: bottom-up, typed, by size.
* :mod:`~sycam.search.correctness` - :class:`CorrectnessOracle`: metric threshold or incumbent,
  counterexamples join the working set (CEGIS).
* :mod:`~sycam.search.synth` - :func:`synthesise`: the loop, with a :class:`Budget`.
* :mod:`~sycam.search.target` - reference maps of a known method, for rediscovery with the
  ``target_pearson`` metric (:mod:`sycam.metrics.target`), and the held-out check.
"""
from ..evidence.sets import EvidenceSet
from ..kernels.memo import CandidateMaps, Memo, ValueCache
from .correctness import Accepted, CorrectnessOracle, Verdict
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
from .synth import Budget, Found, SearchEvent, SearchResult, synthesise
from .target import pearson_to, reference_maps

__all__ = [
    "Accepted", "Budget", "CandidateMaps", "CorrectnessOracle", "DEFAULT_OPERATORS", "Enumerator", "EvidenceSet",
    "Evaluator", "Found", "GRADIENT_SEEDS", "LevelCounts", "Memo", "OpSpec", "RESULTS", "Scores", "SearchEvent",
    "SearchResult", "SearchSpace", "SearchSpaceError", "ValueCache", "Verdict", "candidate_classes",
    "load_space", "parse_operator", "pearson_to", "reference_maps", "synthesise",
]
