"""The engine's one staging scheme, through the entry point: the working subset first, counterexamples
(CEGIS) that join it and stay in the study, a threshold with ``stop="first"``, one progress type, and
one value cache for all objectives."""
import math

import pytest
import torch

from sycam.api import CAM
from sycam.errors import UnknownNameError
from sycam.grammar import parse
from sycam.metrics import MetricError, get_metric
from sycam.search import EvidenceSet, Options, Problem, Progress, SearchError, SearchSpace, run
from sycam.search.ledger import WORKING, is_evaluation
from sycam.search.objectives import Objectives, counterexamples, parse_objectives
from sycam.search.storage import open_store
from sycam.search.toy import toy_problem

pytestmark = pytest.mark.usefixtures("one_thread")

SPACE = dict(operators="+,*,/,relu,abs,sum:hw,mean:hw,max:hw", terminals="A,G", constants="1", max_size=4)


@pytest.fixture(scope="module")
def setup():
    model, batch, layer = toy_problem(12)
    space = SearchSpace(**SPACE)
    ev = EvidenceSet.capture(model, batch, layer, needs=space.evidence_terms)
    grad = CAM("gradcam", model, layers=layer)(batch.x, targets=batch.labels)
    layer_maps = CAM("layercam", model, layers=layer)(batch.x, targets=batch.labels)
    # a target that is Grad-CAM on images 0-5 and LayerCAM on 6-11
    mixed = torch.cat([grad[:6], layer_maps[6:]])
    return model, batch, layer, space, ev, mixed


def problem(setup, objectives, storage="memory", seeds=None, study="s"):
    model, batch, layer, space, ev, _ = setup
    return Problem(model, layer, batch, space=space, objectives=objectives, seeds=seeds, storage=storage,
                   study=study, evidence=ev)


def test_counterexample_rule():
    work = [0, 1]
    # threshold: passes on the working images (mean 0.95 >= 0.9), fails on all (mean 0.6): the failing
    # images outside the subset, worst first, at most `add`; NaN is never a counterexample
    steps = {0: 0.9, 1: 1.0, 2: 0.1, 3: 0.5, 4: 0.95, 5: math.nan, 6: 0.2}
    assert counterexamples(steps, None, work, sign=1.0, threshold=0.9, add=2) == [2, 6]
    assert counterexamples(steps, None, work, sign=1.0, threshold=0.9, add=5) == [2, 6, 3]
    assert counterexamples(steps, None, work, sign=1.0, threshold=0.99) == []      # failed on the subset
    assert counterexamples({0: 1.0, 1: 1.0, 2: 0.95}, None, work, sign=1.0, threshold=0.9) == []   # passes all
    # lower is better: the same rule on sign * value
    low = {r: -v for r, v in steps.items()}
    assert counterexamples(low, None, work, sign=-1.0, threshold=-0.9, add=2) == [2, 6]
    # incumbent: beats it on the subset, not on all images; counterexamples are where it loses most
    inc = {0: 0.5, 1: 0.5, 2: 0.5, 3: 0.9, 4: 0.1, 6: 0.3}
    mine = {0: 0.6, 1: 0.6, 2: 0.4, 3: 0.2, 4: 0.2, 6: 0.25}
    assert counterexamples(mine, inc, work, sign=1.0, add=2) == [3, 2]
    assert counterexamples(mine, None, work, sign=1.0) == []                       # no incumbent yet


def test_counterexamples_join_the_working_subset_and_a_resume_keeps_them(setup, tmp_path):
    _, batch, _, _, _, mixed = setup
    metric = get_metric("target_pearson", reference=mixed, images=batch.x)
    url = f"journal:{tmp_path / 'c.journal'}"
    opts = Options(strategy="enumerate", budget=40, fidelity=4, threshold=0.99, probe=12, seed=0)
    first = run(problem(setup, [metric], open_store(url), seeds={}), opts)
    # Grad-CAM (mean(G, hw)) is right on 0-3 and wrong on 6-11: images of 6-11 joined the subset
    added = first.summary.counterexamples
    assert added and all(r >= 6 for r in added)
    assert first.working == sorted({0, 1, 2, 3} | set(added))
    assert first.study.user_attrs[WORKING] == first.working
    scored = [t for t in first.study.get_trials(deepcopy=False) if is_evaluation(t)]
    # the candidate that taught them: passed on the first four images, failed on all of them
    taught = [t for t in scored
              if t.values and sum(t.intermediate_values[r] for r in range(4)) / 4 >= 0.99 > t.values[0]]
    assert taught and all(t.intermediate_values[r] < 0.99 for t in taught[:1] for r in added[:2])
    # a resume reads the subset back: its candidates are scored on the counterexamples first
    second = run(problem(setup, [metric], open_store(url), seeds={}), Options(**{**opts.__dict__, "budget": 80}))
    assert not second.created and set(first.working) <= set(second.working)
    new = [t for t in second.study.get_trials(deepcopy=False) if is_evaluation(t) and t.number >= len(scored)]
    assert new and all(set(first.working) <= set(t.intermediate_values) for t in new)


def test_a_threshold_stops_at_the_first_candidate_that_reaches_it(setup):
    model, batch, layer, space, ev, _ = setup
    gradcam = parse("mean(G, hw)")
    objectives = Objectives(parse_objectives(["energy_pointing_game"]), ev, space)
    t = float(objectives.evaluate([gradcam])[0].values[0])
    events = []
    r = run(problem(setup, ["energy_pointing_game"], seeds={"gradcam": gradcam}),
            Options(budget=500, threshold=t, stop="first", fidelity=4), progress=events.append)
    assert r.summary.reason == "found" and r.found and r.summary.evaluated == 1
    assert r.best.text == "mean(G, hw)" and r.best.values[0] >= t
    # without stop="first" the same threshold only shapes the stage: the run goes on to its budget
    r = run(problem(setup, ["energy_pointing_game"], seeds={"gradcam": gradcam}),
            Options(budget=30, threshold=t, fidelity=4))
    assert r.summary.reason == "budget" and r.summary.evaluated == 30
    # a threshold nothing reaches stops every candidate on the working subset: the best there is
    # still reported, marked as not scored on every image
    r = run(problem(setup, ["energy_pointing_game"], seeds={}),
            Options(strategy="enumerate", budget=20, threshold=2.0, fidelity=4, probe=12))
    assert r.summary.pruned == 20 and not r.found and r.best is not None and not r.best.complete
    mine = r.study.trials[r.best.trial].intermediate_values
    assert set(mine) == {0, 1, 2, 3} and r.best.values[0] == pytest.approx(sum(mine.values()) / 4)
    # one progress type, read by the CLI's bar and here
    assert events and all(isinstance(e, Progress) for e in events) and events[-1].working >= 4
    with pytest.raises(SearchError, match="give one"):
        Options(stop="first")
    with pytest.raises(SearchError, match="finite"):
        Options(threshold=math.nan)
    with pytest.raises(SearchError, match="stop must be"):
        Options(stop="median")


def test_objectives_share_one_value_cache(setup):
    """A sub-term is computed once per image set whatever the number of metrics: two objectives
    apply as many operators (Memo.ops) as one."""
    _, _, _, space, ev, _ = setup
    cands = [parse(t) for t in ["mean(G, hw)", "relu(G) * A", "G * A / max(A, hw)", "abs(G) + 1", "sum(A * G, hw)"]]

    def ops(names):
        objectives = Objectives(parse_objectives(names), ev, space)
        outcomes = objectives.evaluate(cands)
        evaluators = list(objectives.evaluators.values())
        memos = {id(e.memo()): e.memo() for e in evaluators}       # each metric's memo of all images
        return sum(m.ops for m in memos.values()), outcomes

    one, a = ops(["energy_pointing_game"])
    two, b = ops(["energy_pointing_game", "pointing_game"])
    assert one > 0 and two == one
    assert [o.values[0] for o in a] == [o.values[0] for o in b]


def test_an_objective_that_cannot_be_scored_fails_before_any_model_work(setup):
    _, batch, layer, space, _, _ = setup

    class Boom(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("the model ran")
    with pytest.raises(MetricError, match="needs model_fn="):
        run(Problem(Boom(), layer, batch, space=space, objectives=["deletion"], resources={}), Options(budget=5))
    with pytest.raises(UnknownNameError, match="energy_pointing_game"):
        run(Problem(Boom(), layer, batch, space=space, objectives=["energy_pointing_gam"]), Options(budget=5))
