"""Every registered metric as a search objective: re-explaining metrics (robustness, equivariance,
ADCC, sanity) and XGrad-CAM's axioms scored from evidence captured once, equal to the metric with
sycam.CAM as the explainer, exact at feature resolution, and a clear error up front otherwise."""
import math

import pytest
import torch

from sycam.api import CAM
from sycam.errors import SycamError
from sycam.evidence.sets import EvidenceSet
from sycam.grammar import parse
from sycam.kernels.lowres import LowResMaps
from sycam.metrics import available_metrics, get_metric
from sycam.metrics.base import Metric
from sycam.metrics.registry import define_metric
from sycam.metrics.similarity import pearson, pearson_lowres
from sycam.search.evaluate import Evaluator
from sycam.search.objectives import ObjectiveError, parse_objective
from sycam.search.reexplain import Reexplainer, transform_digest
from sycam.search.space import load_space
from sycam.search.toy import toy_problem

CANDIDATES = ("A * G", "sum(G, hw)")      # a weight map and channel weights
#: the same candidates as CAM expressions (a weight map W is the heatmap relu(sum(W * A, k)))
AS_CAM = ("relu(sum(A * G * A, k))", "sum(G, hw)")
#: metrics that cannot be searched on the toy classifier, and what their error says
REFUSED = {"target_pearson": "reference maps", "det_deletion": "detector's", "det_insertion": "detector's"}
#: the toy model's prediction survives any noise, so responsiveness (over changed predictions) is NaN
UNDEFINED = {"noise_responsiveness"}


@pytest.fixture(scope="module")
def toy():
    model, batch, layer = toy_problem(6)
    space = load_space(None)
    evidence = EvidenceSet.capture(model, batch, [layer], needs=space.evidence_terms)
    return model, batch, layer, space, evidence


def evaluator(toy, metric, **params):
    model, batch, layer, space, evidence = toy
    rx = Reexplainer(model, [layer], space.evidence_terms)
    ev = Evaluator(evidence, space, metric, metric_params=params, model_fn=model, model=model, reexplainer=rx,
                   row_block=len(evidence))
    return ev, rx


@pytest.mark.parametrize("name", available_metrics())
def test_every_registered_metric_is_an_objective_or_says_why(toy, name):
    cands = [parse(c) for c in CANDIDATES]
    if name in REFUSED:                    # refused when parsed: before any model work
        with pytest.raises(ObjectiveError, match=REFUSED[name]):
            parse_objective(name)
        return
    ev, _ = evaluator(toy, name)
    s = ev.score(cands)
    assert s.value.shape == (2, len(toy[4]))
    assert bool(s.valid.all())
    assert not math.isinf(float(s.value.nan_to_num().abs().max()))
    defined = [not math.isnan(v) for v in s.value.flatten().tolist()]
    assert (not any(defined)) if name in UNDEFINED else any(defined), name


def reference(toy, name, cands, **params):
    """The metric with sycam.CAM of each candidate as the real explainer."""
    model, batch, layer, *_ = toy
    cams = [CAM(c, model, layer) for c in cands]

    def explainer_of(cs):
        return lambda x, labels: torch.stack([c.explain(x, labels).maps for c in cs])

    maps = explainer_of(cams)(batch.x, batch.labels)
    return get_metric(name, **params)(maps, batch, model_fn=model, model=model, explainer=explainer_of(cams),
                                      explainer_factory=lambda m: explainer_of([c.with_model(m) for c in cams]))


@pytest.mark.parametrize("name, params", [
    ("noise_robustness", {}), ("noise_consistency", {"similarity": "spearman"}), ("equivariance_flip", {}),
    ("equivariance_shift", {}), ("sanity_cascading", {}), ("adcc", {}),
])
def test_search_score_equals_the_metric_with_cam_as_the_explainer(toy, name, params):
    ev, rx = evaluator(toy, name, **params)
    cands = [parse(c) for c in CANDIDATES]
    got = ev.score(cands).value
    want = reference(toy, name, AS_CAM, **params)
    torch.testing.assert_close(got, want.float(), atol=1e-4, rtol=0, equal_nan=True)


def test_evidence_is_captured_once_per_image_set_and_shared_forwards_once(toy):
    ev, rx = evaluator(toy, "noise_robustness")
    ev.score([parse("A * G"), parse("sum(G, hw)")])
    first = dict(rx.stats())
    assert first["captures"] > 0 and first["forwards"] > 0
    for more in (["G * G", "A"], ["relu(G)", "G + A"]):           # later chunks: no model work at all
        ev.score([parse(c) for c in more])
    assert rx.stats()["captures"] == first["captures"]
    assert rx.stats()["forwards"] == first["forwards"]


def test_axiom_errors_of_the_search_equal_the_metric_on_hand_built_inputs(toy):
    """xgrad_conservation / xgrad_sensitivity from the search: S and the per-channel drops once per
    image (the ablation terminal), the candidate's channel weights from the memo."""
    model, batch, layer, space, evidence = toy
    from sycam.metrics.axioms import AxiomInput
    acts = {}
    h = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: acts.__setitem__("A", o))
    logits = model(batch.x)
    h.remove()
    A = acts["A"].detach().requires_grad_(True)

    def head(a, labels):
        pooled = (model.mix(a) * model.window).sum((2, 3))
        return model.fc(pooled).gather(1, labels[:, None])[:, 0]
    s = head(A, batch.labels)
    torch.testing.assert_close(logits.gather(1, batch.labels[:, None])[:, 0], s.detach())
    (g,) = torch.autograd.grad(s.sum(), A)
    weights = g.sum((2, 3))                                            # sum(G, hw)
    for name in ("xgrad_conservation", "xgrad_sensitivity"):
        ev, _ = evaluator(toy, name)
        got = ev.score([parse("sum(G, hw)")]).value[0]
        want = get_metric(name)(None, batch, axioms=AxiomInput(A.detach(), weights, head=head))
        torch.testing.assert_close(got, want.float(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("h, w, size", [(7, 7, 224), (12, 12, 24), (5, 9, 40)])
def test_pearson_at_feature_resolution_is_the_pearson_of_the_upsampled_maps(h, w, size):
    g = torch.Generator().manual_seed(h * w)
    a, b = torch.randn(3, 4, h, w, generator=g), torch.randn(3, 4, h, w, generator=g).relu()
    a[0, 0] = 0.0      # a constant map: Pearson 0 (a non-zero constant upsamples with rounding noise)
    out = (size, size + (w - h) * 3)
    full = pearson(LowResMaps(a, out).full(), LowResMaps(b, out).full())
    torch.testing.assert_close(pearson_lowres(a, b, out), full, atol=1e-5, rtol=0)
    assert float(full[0, 0]) == 0
    if h == w:        # a horizontal flip commutes with the symmetric upsampling
        torch.testing.assert_close(LowResMaps(a.flip(-1), out).full(), LowResMaps(a, out).full().flip(-1))


def test_lowres_and_full_resolution_scores_agree(toy):
    """The feature-resolution path (Pearson) against the same metric forced to input resolution."""
    cands = [parse(c) for c in CANDIDATES]
    for name in ("noise_robustness", "equivariance_flip"):
        ev, _ = evaluator(toy, name)
        assert ev.metric.accepts_lowres
        low = ev.score(cands).value
        ev.metric.accepts_lowres = False
        full = ev.score(cands).value
        torch.testing.assert_close(low, full, atol=1e-5, rtol=0, equal_nan=True)
    assert not get_metric("noise_robustness", similarity="spearman").accepts_lowres
    assert not get_metric("equivariance_shift").accepts_lowres


def test_transform_digest_fixes_the_noise_samples(toy):
    model, batch, *_ = toy
    a = transform_digest(get_metric("noise_robustness"), batch)
    assert a == transform_digest(get_metric("noise_robustness"), batch)
    assert a != transform_digest(get_metric("noise_robustness", seed=1), batch)
    assert transform_digest(get_metric("equivariance_flip"), batch) != transform_digest(
        get_metric("equivariance_shift"), batch)
    s = transform_digest(get_metric("sanity_cascading"), batch, model)
    assert s == transform_digest(get_metric("sanity_cascading"), batch, model)
    assert s != transform_digest(get_metric("sanity_cascading", seed=3), batch, model)
    assert transform_digest(get_metric("energy_pointing_game"), batch) is None


def test_a_metric_that_cannot_be_searched_says_why_when_parsed(toy):
    with pytest.raises(ObjectiveError, match="reference maps"):
        parse_objective("target_pearson")

    class Weightless(Metric):
        name = "weightless"
        uses_maps = False

        def compute(self, maps, batch, res):
            raise AssertionError("never called")

    from sycam.metrics.registry import register_metric
    register_metric("weightless_for_test", Weightless, overwrite=True)
    with pytest.raises(ObjectiveError, match="does not score maps"):
        parse_objective("weightless_for_test")
    ev_space = load_space(None, result="heatmap", operators="+,*,relu,sum:k")
    model, batch, layer, space, evidence = toy
    with pytest.raises(SycamError, match="heatmaps"):
        Evaluator(EvidenceSet.capture(model, batch, [layer], needs=ev_space.evidence_terms), ev_space,
                  "xgrad_conservation", reexplainer=Reexplainer(model, [layer], ev_space.evidence_terms))
    with pytest.raises(SycamError, match="reexplainer="):
        Evaluator(evidence, space, "noise_robustness", model_fn=model)


def test_a_user_metric_that_re_explains_is_an_objective(toy):
    @define_metric("self_similarity", needs=("explainer",))
    def self_similarity(maps, batch, explainer):
        return pearson(maps, explainer(batch.x, batch.labels))
    ev, _ = evaluator(toy, self_similarity)
    torch.testing.assert_close(ev.score([parse(c) for c in CANDIDATES]).value, torch.ones(2, len(toy[4])),
                               atol=1e-5, rtol=0)


def test_a_user_metric_reading_the_axioms_gets_the_candidates_channel_weights(toy):
    @define_metric("residual", direction="lower", needs=("axioms",))
    def residual(maps, batch, axioms):
        contrib = (axioms.candidate_weights()[0] * axioms.activations[None]).sum((-3, -2, -1))
        return (axioms.score - contrib).abs() / axioms.score.abs()
    cands = [parse(c) for c in CANDIDATES]
    got = evaluator(toy, residual)[0].score(cands).value
    want = evaluator(toy, "xgrad_conservation")[0].score(cands).value
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
