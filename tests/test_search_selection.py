"""The simplest winner (issue 8): among candidates within a tolerance of the best, the smallest."""
import math

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from sycam.grammar import parse
from sycam.grammar.ast import complexity
from sycam.search import heldout
from sycam.search.driver import Options, best_of
from sycam.search.ledger import INFO
from sycam.search.selection import SelectionError, parse_tolerance, simplest, standard_error, winner
from sycam.search.space import SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = SearchSpace(max_size=9)


def _trial(expr, value, se, source="enumerate", state=TrialState.COMPLETE, **extra):
    return create_trial(state=state, values=[value] if state == TrialState.COMPLETE else None,
                        params={"x": 0.0}, distributions={"x": FloatDistribution(0, 1)},
                        user_attrs={INFO: {"expr": expr, "source": source, "se": se, **extra}})


def _study(trials, direction="maximize"):
    study = optuna.create_study(direction=direction)
    study.add_trials(trials)
    return study


# the demo's case: a size-8 candidate beats a size-2 one by 0.0002, far inside one standard error
LARGE = "(G - G2) * (A * 2)"
SMALL = "G"


def test_a_larger_candidate_that_ties_a_smaller_one_loses_to_it():
    trials = [_trial(LARGE, 0.5002, 0.01), _trial(SMALL, 0.5000, 0.01), _trial("relu(G)", 0.40, 0.01)]
    study = _study(trials)
    got = winner(study.trials, ["maximize"])
    assert got.user_attrs[INFO]["expr"] == SMALL
    # the same rule in the driver's reading of the study and in the report's selection
    assert best_of(study.trials, ["maximize"], "se").number == got.number
    tops, _, _ = heldout.select(study, SPACE, ["maximize"], top=3)
    assert tops[0].text == SMALL
    assert [e.text for e in tops[1:]] == [LARGE, "relu(G)"]          # the rest by score
    # tolerance 0 is the plain best; a number below the gap keeps the larger one too
    assert winner(study.trials, ["maximize"], tolerance=0.0).user_attrs[INFO]["expr"] == LARGE
    assert winner(study.trials, ["maximize"], tolerance=0.0001).user_attrs[INFO]["expr"] == LARGE
    assert winner(study.trials, ["maximize"], tolerance=0.0003).user_attrs[INFO]["expr"] == SMALL


def test_outside_the_tolerance_the_better_score_wins():
    study = _study([_trial(LARGE, 0.60, 0.01), _trial(SMALL, 0.50, 0.01)])
    assert winner(study.trials, ["maximize"]).user_attrs[INFO]["expr"] == LARGE


def test_minimised_metrics_and_ties_in_size_break_by_score():
    study = _study([_trial(LARGE, 0.30, 0.05), _trial(SMALL, 0.32, 0.05), _trial("A", 0.33, 0.05)],
                   direction="minimize")
    # both size-1 candidates are within one se of the best (0.30): the better of them
    assert winner(study.trials, ["minimize"]).user_attrs[INFO]["expr"] == SMALL


def test_seeds_pruned_duplicates_and_missing_se_in_the_selection():
    study = _study([_trial(LARGE, 0.51, math.nan), _trial(SMALL, 0.50, 0.1, duplicate_of=0),
                    _trial("A", 0.505, 0.1, state=TrialState.PRUNED)])
    # without a standard error (an older study) the tolerance is 0: the best
    assert winner(study.trials, ["maximize"]).user_attrs[INFO]["expr"] == LARGE
    assert winner([], ["maximize"]) is None


def test_standard_error_and_the_generic_rule():
    assert standard_error([1.0, 3.0]) == pytest.approx(1.0)          # std 1.414 / sqrt 2
    assert math.isnan(standard_error([1.0])) and math.isnan(standard_error([math.nan, 2.0]))
    items = [("big", 1.0, 9), ("small", 0.95, 3)]
    pick = simplest(items, value=lambda t: t[1], size=lambda t: t[2], se=lambda t: 0.1, direction="maximize")
    assert pick[0] == "small"


def test_bad_tolerances_fail_clearly():
    assert parse_tolerance(None) == "se" and parse_tolerance("SE") == "se" and parse_tolerance("0.01") == 0.01
    for bad in ("-1", "nan", "inf", "one"):
        with pytest.raises(SelectionError, match="tolerance"):
            parse_tolerance(bad)
    with pytest.raises(SelectionError):     # the driver's options check it before any model work
        Options(tolerance="-0.5")


def test_the_leaderboard_shows_the_demo_winner_without_its_factor_of_two():

    from sycam.report.leaderboard import forms

    entry = heldout.Entry("#7", parse("(G - G2) * (A * 2)"), "enumerate")
    f = forms(SPACE, entry)
    assert f["searched"] == "relu(sum((G - G2) * (A * 2) * A, k))"
    assert f["expression"] == "relu(sum((G - G2) * A * A, k))" and "G^{(2)}" in f["latex"]
    # the smallest candidate of the study with the same key is shown when smaller (the study vouches for the key)
    f = forms(SPACE, heldout.Entry("#8", parse("(G - G2) * (A * 2)"), "optuna", smallest=parse("G")))
    assert f["expression"] == "relu(sum(G * A, k))" and f["searched"] == "relu(sum((G - G2) * (A * 2) * A, k))"


def test_a_search_stores_each_candidates_standard_error_and_reads_the_winner_by_the_rule(tmp_path):
    import torch

    from sycam.evidence.sets import EvidenceSet
    from sycam.search.driver import Search, make_sampler, open_study, seed_enqueuer
    from sycam.search.objectives import Objectives, parse_objectives
    from sycam.search.optuna_space import GrammarSpace
    from sycam.search.storage import open_store
    from sycam.search.toy import toy_problem

    torch.manual_seed(0)
    model, batch, layer = toy_problem(12)
    evidence = EvidenceSet.capture(model, batch, [layer], needs=SPACE.evidence_terms)
    specs = parse_objectives(["energy_pointing_game"])
    objectives = Objectives(specs, evidence, SPACE)
    store = open_store("memory")
    study, _ = open_study(store, "s", {"space": SPACE.to_dict()}, objectives.directions, make_sampler("tpe", 0, 1),
                          seeds=seed_enqueuer(SPACE, GrammarSpace(SPACE), SPACE.seeds()))
    progress = []
    Search(store, study, SPACE, objectives, Options(strategy="enumerate", budget=40, enumerate_size=3, seed=0),
           probe=evidence.rows(range(6)), seeds=SPACE.seeds(), progress=progress.append).run()
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(done) > 10
    for t in done:                         # the standard error of the per-image scores of each candidate
        scores = objectives.evaluators[0].score([parse(t.user_attrs[INFO]["expr"])]).value[0]
        assert t.user_attrs[INFO]["se"] == pytest.approx(standard_error(scores.tolist()), rel=1e-5)
    chosen = winner(study.trials, ["maximize"])
    assert progress[-1].best == chosen.user_attrs[INFO]["expr"]       # the driver reports the selected one
    best = max(done, key=lambda t: t.values[0])
    floor = best.values[0] - best.user_attrs[INFO]["se"]
    assert chosen.values[0] >= floor

    def size(t):
        return complexity(parse(t.user_attrs[INFO]["expr"]))

    assert all(size(t) >= size(chosen) for t in done if t.values[0] >= floor)
