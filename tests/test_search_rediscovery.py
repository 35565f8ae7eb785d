"""Rediscovery on a tiny model through the one entry point: maps made by a known expression, the
metric "Pearson to those maps", no seeds at all (so certainly not the target): the enumeration
stage with a threshold and ``stop="first"`` must find an expression whose maps match on
held-out images (Pearson >= 0.99 on every one), within the stated budget.

Space (the same for every target): terminals A, G, G2; + * / relu abs sum:hw max:hw;
constant 1; weight maps; size <= 7. Budget: 30 s each (XGrad-CAM and the first invented target
take thousands of candidates: marked slow, run in CI's second stage or with ``-m slow``).
"""
import time

import pytest

from sycam.grammar import parse
from sycam.metrics import get_metric
from sycam.search import EvidenceSet, Options, Problem, SearchSpace, pearson_to, reference_maps, run
from sycam.search.ledger import expression_key
from sycam.search.toy import toy_problem

pytestmark = pytest.mark.usefixtures("one_thread")


SPACE = dict(terminals="A,G,G2", operators="+,*,/,relu,abs,sum:hw,max:hw", constants="1", max_size=7)
TARGETS = {
    "gradcam": "gradcam",
    "gradcampp": "gradcampp",
    "xgradcam": "xgradcam",
    # invented, not seeds (sizes of the weight expression: 7 and 10)
    "relu_g_a_over_max_a": "relu(sum(relu(G) * A / max(A, hw) * A, k))",
    "g2a_over_abs_g": "relu(sum(sum(G2 * A, hw) / (sum(abs(G), hw) + 1) * A, k))",
}


@pytest.fixture(scope="module")
def problem():
    model, batch, layer = toy_problem(20)
    train, held = batch[:12], batch[12:]
    space = SearchSpace(**SPACE)
    ev = EvidenceSet.capture(model, train, layer, needs=space.evidence_terms)
    return model, layer, train, held, space, ev


# the engine records every enumerated candidate as a trial (key, parameters): the two targets that take
# thousands of candidates (10-20 s each on a shared core) run in the slow stage
SLOW = {"xgradcam", "relu_g_a_over_max_a"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in TARGETS])
def test_rediscovery_on_a_tiny_model(problem, name):
    model, layer, train, held, space, ev = problem
    target = TARGETS[name]
    ref = reference_maps(target, model, train.x, layer, train.labels)
    t0 = time.perf_counter()
    metric = get_metric("target_pearson", reference=ref, images=train.x, labels=train.labels)
    r = run(Problem(model, [layer], train, held, space=space, objectives=[metric], seeds={}, evidence=ev),
            Options(strategy="enumerate", budget=None, seconds=30, threshold=0.999, stop="first", fidelity=4,
                    probe=12, sympy="off"))
    seconds = time.perf_counter() - t0
    assert r.summary.reason == "found" and r.found, (r.summary, r.best)
    assert r.best.values[0] >= 0.999
    # held-out check through the public CAM path, independent of the search's evaluator
    maps = reference_maps(space.heatmap(r.best.expr), model, held.x, layer, held.labels)
    truth = reference_maps(target, model, held.x, layer, held.labels)
    r_held = pearson_to(maps, truth)
    assert float(r_held.min()) >= 0.99, (r.best.text, r_held.tolist())
    if name == "gradcam":      # Grad-CAM's own expression, up to a positive factor (mean(G, hw) = sum / hw)
        assert expression_key(space, r.best.expr) == expression_key(space, parse("sum(G, hw)")), r.best.text
    assert seconds < 30
