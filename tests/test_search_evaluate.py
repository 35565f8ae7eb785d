"""Candidate evaluation from cached evidence: parity with the public CAM path, the memo and its
budget, invalid maps, directions, the multi-fidelity hook, errors before work."""
import math

import pytest
import torch

from sycam.api import CAM
from sycam.errors import UnknownNameError
from sycam.grammar import parse
from sycam.kernels.compiler import Program
from sycam.kernels.lowres import LowResMaps
from sycam.metrics import MetricError, get_metric
from sycam.metrics.similarity import pearson
from sycam.metrics.target import TargetPearson, lowres_pearson
from sycam.search import Evaluator, EvidenceSet, Memo, SearchSpace, ValueCache
from sycam.search.toy import toy_problem

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy():
    model, batch, layer = toy_problem(12)
    space = SearchSpace.default()
    ev = EvidenceSet.capture(model, batch, layer, needs=space.evidence_terms, chunk=5)
    return model, batch, layer, space, ev


def test_scores_match_the_public_cam_path(toy):
    model, batch, layer, space, ev = toy
    seeds = space.seeds()
    ev_scores = Evaluator(ev, space, "energy_pointing_game").score(list(seeds.values()))
    metric = get_metric("energy_pointing_game")
    for i, name in enumerate(seeds):
        maps = CAM(name, model, layers=layer)(batch.x, targets=batch.labels)
        expected = metric(maps, batch)
        assert torch.allclose(ev_scores.value[i], expected, atol=1e-5), name


def test_batched_weights_equal_one_compiled_expression_each(toy):
    _, batch, _, space, ev = toy
    cands = [parse(t) for t in ["mean(G, hw)", "sum(A * G, hw) / sum(A, hw)", "max(G, hw) - mean(G, hw)",
                                "relu(G) * A / max(A, hw)", "G"]]
    maps = Evaluator(ev, space, "energy_pointing_game").maps(cands)
    terms = next(iter(ev.layers.values()))
    for i, c in enumerate(cands):
        raw = Program([space.heatmap(c)], space.terminal_axes)(terms)[0]
        assert torch.allclose(maps.raw[0][i], raw, rtol=1e-5, atol=1e-6)


def test_a_candidate_with_cached_children_costs_one_op(toy):
    _, _, _, _, ev = toy
    memo = Memo(ev, ValueCache(64 << 20))
    memo(parse("sum(A * G, hw)"))
    memo(parse("sum(A, hw)"))
    before = memo.ops
    memo(parse("sum(A * G, hw) / sum(A, hw)"))
    assert memo.ops == before + 1
    memo(parse("sum(A * G, hw) / sum(A, hw)"))
    assert memo.ops == before + 1          # cached


def test_memoised_safe_denominators_give_the_compiled_quotients():
    torch.manual_seed(0)
    A = torch.relu(torch.randn(3, 64, 8, 8))            # zeros: the clamped path
    G = torch.randn(3, 64, 8, 8)                        # mixed signs
    P = torch.rand(3, 64, 8, 8) + 0.5                   # away from zero: the fast path
    terms = {"A": (A, "bkhw"), "G": (G, "bkhw"), "P": (P, "bkhw")}
    ev = EvidenceSet.from_tensors({"l": terms}, (16, 16))
    memo = Memo(ev, ValueCache(64 << 20))
    layout = next(iter(ev.layers.values()))
    for text in ["G / A", "A / G", "G / P", "(A + G) / A", "G / (0 - A)", "G / sum(A, hw)"]:
        expected = Program([parse(text)], {k: "bkhw" for k in terms})(layout)[0]
        got = memo(parse(text))[0]
        assert torch.isfinite(got).all() and torch.equal(got.reshape(expected.shape), expected), text


def test_row_blocks_do_not_change_scores(toy):
    _, _, _, space, ev = toy
    cands = [parse(t) for t in ["mean(G, hw)", "G / A", "relu(G) * A / max(A, hw)", "sum(A * G, hw) / sum(A, hw)"]]
    whole = Evaluator(ev, space, "energy_pointing_game", row_block=len(ev)).score(cands)
    for block in (1, 5, None):
        e = Evaluator(ev, space, "energy_pointing_game", row_block=block)
        assert torch.allclose(e.score(cands).value, whole.value, atol=1e-6), block
    assert EvidenceSet.rows(ev, [3, 4, 5]).layers[layer_of(ev)]["A"]._base is not None      # a block is a view
    assert torch.equal(ev.rows([5, 1]).layers[layer_of(ev)]["A"], ev.layers[layer_of(ev)]["A"][[5, 1]])


def layer_of(ev):
    return next(iter(ev.layers))


def test_capture_runs_the_model_in_device_sized_chunks_with_the_same_evidence(toy):
    from sycam.batching import CPU_ROWS
    model, batch, layer, space, ev = toy
    sizes = []
    hook = model.register_forward_pre_hook(lambda _m, inp: sizes.append(inp[0].shape[0]))
    try:
        default = EvidenceSet.capture(model, batch, layer, needs=space.evidence_terms)
    finally:
        hook.remove()
    assert max(sizes) == CPU_ROWS and sum(sizes) == len(batch)
    for term, t in ev.layers[layer_of(ev)].items():          # ``ev`` was captured in chunks of 5
        assert torch.allclose(default.layers[layer_of(ev)][term], t, rtol=1e-5, atol=1e-6), term


def test_memo_budget_is_respected_and_evicted_values_are_recomputed(toy):
    _, _, _, _, ev = toy
    one = next(iter(ev.layers.values()))["A"]
    size = one.numel() * one.element_size()
    cache = ValueCache(3 * size)
    memo = Memo(ev, cache)
    exprs = [parse(t) for t in ["A * G", "A + G", "A - G", "relu(G) * A", "abs(G) + A", "A * A"]]
    first = [memo(e)[0].clone() for e in exprs]
    assert cache.stats.peak_bytes <= 3 * size and cache.stats.evictions >= 3
    again = [memo(e)[0] for e in exprs]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert cache.stats.bytes <= cache.budget


def test_invalid_maps_score_minus_infinity_without_crashing(toy):
    _, _, _, space, ev = toy
    e = Evaluator(ev, space, "pointing_game")
    s = e.score([parse("exp(A) ^ 40"), parse("mean(G, hw)")])   # (e^A)^40 overflows float32
    assert not bool(s.valid[0].all()) and bool(s.valid[1].all())
    assert s.mean[0] == -math.inf and math.isfinite(float(s.mean[1]))
    bad = ~s.valid[0]
    assert torch.isnan(s.value[0][bad]).all()


def test_lower_is_better_metrics_are_negated_internally(toy):
    _, _, _, space, ev = toy
    metric = get_metric("complexity")
    assert metric.direction.value == "lower"
    s = Evaluator(ev, space, metric).score([parse("mean(G, hw)"), parse("G")])
    assert torch.allclose(s.internal, -s.value)
    assert torch.allclose(s.metric_mean, s.value.mean(1))


def test_subsets_and_a_second_metric_on_the_same_memo(toy):
    _, _, _, space, ev = toy
    e = Evaluator(ev, space, "energy_pointing_game")
    cands = [parse(t) for t in ["mean(G, hw)", "G", "relu(G)", "A", "sum(A * G, hw) / sum(A, hw)"]]
    full = e.score(cands)
    part = e.score(cands, rows=[1, 4, 7])
    assert torch.allclose(part.value, full.value[:, [1, 4, 7]])
    ops = e.memo().ops
    other = e.with_metric("pointing_game")           # shares the value cache and the row subsets' memos
    shared = other.score(cands)
    assert e.memo().ops == ops and other.memo() is e.memo()      # no sub-term computed again
    alone = Evaluator(ev, space, "pointing_game").score(cands)
    assert torch.equal(shared.value, alone.value) and other.metric.name == "pointing_game"
    assert e.metric.name == "energy_pointing_game"


def test_errors_before_any_work(toy):
    _, batch, _, space, ev = toy
    with pytest.raises(UnknownNameError, match="did you mean 'pointing_game'"):
        Evaluator(ev, space, "pointng_game")
    no_gt = EvidenceSet(ev.layers, ev.input_size, batch[:len(batch)])
    no_gt.batch.masks, no_gt.batch.boxes = None, []
    with pytest.raises(MetricError, match="needs batch.masks or batch.boxes"):
        Evaluator(no_gt, space, "pointing_game")
    with pytest.raises(MetricError, match="model_fn"):
        Evaluator(ev, space, "deletion")


def test_target_pearson_is_exact_at_feature_resolution(toy):
    model, batch, layer, space, ev = toy
    ref = CAM("gradcampp", model, layers=layer)(batch.x, targets=batch.labels)
    metric = get_metric("target_pearson", reference=ref, images=batch.x)
    assert isinstance(metric, TargetPearson)
    maps = Evaluator(ev, space, metric).maps([parse("mean(G, hw)"), parse("G"), parse("A * 0 + 1")])
    low = maps.lowres()
    exact = pearson(low.full(), ref[None])
    assert torch.allclose(lowres_pearson(low, ref), exact, atol=1e-5)
    # rows are matched by image, in any order and subset
    sub = batch[[5, 2]]
    small = LowResMaps(low.a[:, [5, 2]], low.size)
    assert torch.allclose(metric(small, sub), exact[:, [5, 2]], atol=1e-5)
    with pytest.raises(MetricError, match="no reference"):
        metric(small, toy_problem(2, seed=3)[1])


def test_target_pearson_tells_rows_of_one_image_apart_by_label(toy):
    model, batch, layer, space, ev = toy
    two = batch[[0, 0, 1]]
    two.labels = torch.tensor([0, 2, 1])
    ref = CAM("gradcam", model, layers=layer)(two.x, targets=two.labels)
    assert pearson(ref[0], ref[1]) < 0.99                  # the two classes' maps differ
    with pytest.raises(MetricError, match="labels="):
        get_metric("target_pearson", reference=ref, images=two.x)
    metric = get_metric("target_pearson", reference=ref, images=two.x, labels=two.labels)
    flipped = two[[1, 0, 2]]
    assert torch.allclose(metric(ref[[1, 0, 2]], flipped), torch.ones(3), atol=1e-5)
