"""The correctness oracle (threshold / incumbent), counterexamples (CEGIS) and the synthesis loop."""
import math

import pytest
import torch

from sycam.api import CAM
from sycam.errors import SycamError
from sycam.grammar import parse
from sycam.metrics import get_metric
from sycam.search import Budget, CorrectnessOracle, Evaluator, EvidenceSet, SearchSpace, synthesise
from sycam.search.toy import toy_problem

pytestmark = pytest.mark.usefixtures("one_thread")


SPACE = dict(operators="+,*,/,relu,abs,sum:hw,mean:hw,max:hw", terminals="A,G", constants="1", max_size=5)


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


def test_counterexamples_join_the_working_set(setup):
    _, batch, _, space, ev, mixed = setup
    metric = get_metric("target_pearson", reference=mixed, images=batch.x)
    oracle = CorrectnessOracle(Evaluator(ev, space, metric), threshold=0.99, mode="each", working=4, add=2)
    gradcam = parse("mean(G, hw)")
    (v,) = oracle.check([gradcam])
    assert v.passed_working and not v.accepted            # right on 0-3, wrong on 6-11
    assert len(v.counterexamples) == 2 and all(r >= 6 for r in v.counterexamples)
    rest = Evaluator(ev, space, metric).score([gradcam], list(range(4, 12))).value[0]
    worst = (torch.argsort(rest)[:2] + 4).tolist()
    assert sorted(v.counterexamples) == sorted(worst)
    assert oracle.working == sorted([0, 1, 2, 3] + v.counterexamples)
    verified = oracle.verified
    (again,) = oracle.check([gradcam])                      # now refuted on the working set alone
    assert not again.passed_working and oracle.verified == verified


def test_threshold_mean_mode_and_direction(setup):
    _, _, _, space, ev, _ = setup
    evaluator = Evaluator(ev, space, "complexity")          # lower is better
    cands = [parse("mean(G, hw)"), parse("G"), parse("A")]
    full = evaluator.score(cands).metric_mean.tolist()
    t = sorted(full)[1]                                      # between the best and the worst
    oracle = CorrectnessOracle(evaluator, threshold=t, mode="mean", working=12)
    assert oracle.tau == -t
    verdicts = oracle.check(cands)
    assert [v.accepted for v in verdicts] == [m <= t + 1e-7 for m in full]
    assert sum(v.accepted for v in verdicts) == 2


def test_incumbent_mode_accepts_only_improvements(setup):
    _, _, _, space, ev, _ = setup
    oracle = CorrectnessOracle(Evaluator(ev, space, "energy_pointing_game"), threshold=None, working=4)
    cands = [parse(t) for t in ["mean(G, hw)", "G", "relu(G)", "A", "max(G, hw)", "sum(A * G, hw)",
                                "relu(G) * A", "abs(G)", "G * A * A"]]
    oracle.check(cands)
    means = [a.mean for a in oracle.accepted]
    assert means and means == sorted(means) and len(set(means)) == len(means)
    assert oracle.incumbent is oracle.accepted[-1]


def test_oracle_rejects_bad_settings(setup):
    _, _, _, space, ev, _ = setup
    e = Evaluator(ev, space, "pointing_game")
    with pytest.raises(SycamError, match="mode"):
        CorrectnessOracle(e, threshold=0.5, mode="median")
    with pytest.raises(SycamError, match="working"):
        CorrectnessOracle(e, threshold=0.5, working=[40])
    with pytest.raises(SycamError, match="finite"):
        CorrectnessOracle(e, threshold=math.nan)


def test_synthesise_reports_counts_seeds_and_progress(setup):
    _, _, _, space, ev, _ = setup
    events = []
    r = synthesise(space, ev, "energy_pointing_game", budget=Budget(seconds=30), progress=events.append)
    assert r.stop_reason == "max_size" and r.scored == sum(c["candidates_observational"] for c in r.counts)
    assert {"gradcam", "hirescam", "layercam"} <= set(r.seeds)
    assert r.best is not None and r.best.score >= max(r.seeds.values())
    kinds = [e.kind for e in events]
    assert kinds[0] == "seeds" and kinds[-1] == "done" and "level" in kinds
    for c in r.counts:
        assert c["candidates_observational"] >= c["scored"] >= c["passed_working"] >= c["accepted"]
    assert "size  generated" in r.summary()
    assert r.as_dict()["best"]["expression"] == r.best.text


def test_synthesise_stops_on_budget_and_validates_before_work(setup):
    _, _, _, _, ev, _ = setup
    big = SearchSpace(**{**SPACE, "max_size": 12})
    r = synthesise(big, ev, "pointing_game", budget=Budget(seconds=1.0))
    assert r.stop_reason == "time" and r.seconds < 10
    r = synthesise(big, ev, "pointing_game", budget=Budget(seconds=None, candidates=50), seeds=False)
    assert r.stop_reason == "candidates" and 50 <= r.scored < 50 + 256
    with pytest.raises(SycamError):
        synthesise(big, ev, "pointing_gme")
    with pytest.raises(SycamError):
        Budget(seconds=-1)
