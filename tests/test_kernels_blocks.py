"""Many candidates at once (sycam/kernels/blocks.py): the maps and scores of one candidate at a
time through the interpreter (Memo + maps_from_values), on random evidence with exact zeros,
infinite and NaN sub-terms and divisions by zero, for random candidates of the default weights
and weight-maps spaces; each sub-term once per block; the cache budget holds."""
import random

import pytest
import torch

from sycam.grammar import parse
from sycam.grammar.ast import Call, walk
from sycam.kernels.blocks import BlockMemo, fast_layout
from sycam.kernels.memo import maps_from_values
from sycam.search import Evaluator, EvidenceSet, Memo, SearchSpace, ValueCache
from sycam.search.evaluate import candidate_axes
from sycam.search.optuna_space import GrammarSpace
from sycam.search.toy import toy_batch

pytestmark = pytest.mark.usefixtures("one_thread")

EDGE_CASES = {
    "weights": ["sum(G3 * G3, hw)", "max(G3, hw) - max(G3, hw)", "1 / sum(A - A, hw)", "sum(G / A, hw)",
                "sum(A / G, hw) / max(A, hw)", "mean(G, hw) / (sum(A, hw) - sum(A, hw))", "max(A, hw)"],
    "weight_maps": ["G3 * G3", "G3 - G3", "G / (A - A)", "1 / A", "A / G", "relu(G) * A / max(A, hw)", "A", "G",
                    "G2 / sum(A * A, hw)", "mean(G, hw)", "abs(G3) / G"],
}


def random_evidence(k: int, h: int, w: int, n: int = 10, seed: int = 0, dtype=torch.float32) -> EvidenceSet:
    """A, G, G2 = G^2, G3 = G^3 with ReLU zeros in A, zero channels in G and channel scales from
    1e-6 to 1e13 (G3 overflows to infinity on some channels in float32)."""
    g = torch.Generator().manual_seed(seed)
    A = torch.relu(torch.randn(n, k, h, w, generator=g, dtype=torch.float64))
    G = torch.randn(n, k, h, w, generator=g, dtype=torch.float64)
    G = G * 10.0 ** torch.randint(-6, 14, (n, k, 1, 1), generator=g)
    G[:, ::5] = 0.0
    terms = {name: (t.to(dtype), "bkhw") for name, t in {"A": A, "G": G, "G2": G * G, "G3": G * G * G}.items()}
    return EvidenceSet.from_tensors({"feat": terms}, (24, 24), toy_batch(n, 24))


def random_candidates(result: str, n: int, seed: int = 0) -> list:
    space = SearchSpace.default().replace(result=result, max_size=11)
    grammar = GrammarSpace(space)
    rng = random.Random(seed)
    out = [grammar.decode_with(lambda _, c: rng.choice(c), lambda _, lo, hi: rng.randint(lo, hi))[0]
           for _ in range(n)]
    return out + [parse(t) for t in EDGE_CASES[result]]


def one_at_a_time(ev, space, cands):
    memo = Memo(ev, ValueCache(1 << 30))
    return maps_from_values([memo(c) for c in cands], [candidate_axes(c, space) for c in cands], ev, space.relu)


@pytest.mark.parametrize("result", ["weights", "weight_maps"])
def test_same_maps_and_scores_as_one_candidate_at_a_time(result):
    ev = random_evidence(k=8, h=6, w=6)          # k < h*w: the evidence's own layout, bit for bit
    space = SearchSpace.default().replace(result=result)
    cands = random_candidates(result, 150)
    want = one_at_a_time(ev, space, cands)
    got = BlockMemo(ev, ValueCache(1 << 30), block_rows=4).maps(cands, [candidate_axes(c, space) for c in cands],
                                                              space.relu)
    assert not bool(want.valid.all()) and bool(want.valid.any())            # invalid maps are among them
    assert torch.equal(got.valid, want.valid)
    assert torch.equal(got.raw[0], want.raw[0])
    e = Evaluator(ev, space, "energy_pointing_game", row_block=3)
    scores = e.score(cands)
    expected = e.score_maps(want)
    assert torch.equal(scores.valid, expected.valid)
    assert torch.allclose(scores.value, expected.value, equal_nan=True, rtol=0, atol=0)


@pytest.mark.parametrize("result", ["weights", "weight_maps"])
def test_channels_innermost_is_as_accurate_as_one_candidate_at_a_time(result):
    """Reductions along another memory order round differently: against float64, every map is as
    close as the interpreter's (a map that is all rounding, e.g. relu(sum_k sum(mean(A, hw) - A, hw)
    A_k), is rounding in both)."""
    ev = random_evidence(k=32, h=3, w=3, seed=1)     # k >= h*w: terminals laid out with k innermost
    A = next(iter(ev.layers.values()))["A"]
    fast = fast_layout(A)
    assert fast.stride(3) == 1 and torch.equal(fast, A)
    space = SearchSpace.default().replace(result=result)
    cands = random_candidates(result, 150, seed=1)
    want = one_at_a_time(ev, space, cands)
    got = BlockMemo(ev, ValueCache(1 << 30), block_rows=4).maps(cands, [candidate_axes(c, space) for c in cands],
                                                              space.relu)
    exact = one_at_a_time(random_evidence(k=32, h=3, w=3, seed=1, dtype=torch.float64), space, cands)
    assert torch.equal(got.valid, want.valid)
    ref, old, new = (m.raw[0].flatten(2) for m in (exact, want, got))
    scale = ref.abs().amax(-1)
    # well-determined maps: float32 maps of the size of the exact one (not rounding of a zero map)
    ok = want.valid & exact.valid & (scale >= 1e-3 * torch.maximum(old.abs().amax(-1), new.abs().amax(-1)))
    assert int(ok.sum()) > 0.9 * int((want.valid & exact.valid).sum())
    err_old, err_new = ((m - ref).abs().amax(-1)[ok] for m in (old, new))
    assert bool((err_new <= 4 * err_old + 1e-5 * scale[ok]).all())


def test_each_sub_term_once_per_block_and_cached_children_cost_one_op():
    ev = random_evidence(k=8, h=6, w=6)
    space = SearchSpace.default()
    cands = [parse(t) for t in ["A * G", "sum(A * G, hw)", "sum(A * G, hw) / sum(A, hw)", "G / sum(A, hw)",
                                "relu(A * G)", "A * G"]]
    distinct = {n for c in cands for n in walk(c) if isinstance(n, Call)}
    memo = BlockMemo(ev, ValueCache(1 << 30), block_rows=4)                  # 10 images: 3 blocks
    memo.maps(cands, [candidate_axes(c, space) for c in cands])
    assert memo.ops == 3 * len(distinct)
    memo.maps([parse("sum(A * G, hw) * sum(A, hw)")], [frozenset("bk")])
    assert memo.ops == 3 * (len(distinct) + 1)


def test_a_small_cache_bounds_memory_and_changes_nothing():
    ev = random_evidence(k=8, h=6, w=6)
    space = SearchSpace.default()
    cands = random_candidates("weight_maps", 60, seed=2)
    want = one_at_a_time(ev, space, cands)
    block = next(iter(ev.layers.values()))["A"][:4]
    for budget in (0, 3 * block.numel() * block.element_size()):
        cache = ValueCache(budget)
        got = BlockMemo(ev, cache, block_rows=4).maps(cands, [candidate_axes(c, space) for c in cands])
        assert torch.equal(got.raw[0], want.raw[0]) and torch.equal(got.valid, want.valid)
        assert cache.stats.peak_bytes <= budget


def test_scores_do_not_depend_on_how_candidates_are_grouped():
    ev = random_evidence(k=8, h=6, w=6)
    space = SearchSpace.default()
    cands = random_candidates("weight_maps", 80, seed=3)
    whole = Evaluator(ev, space, "pointing_game").score(cands)
    per_map = 4 * len(ev) * 36
    small = Evaluator(ev, space, "pointing_game", map_bytes=7 * per_map, chunk=3).score(cands)   # 7 at a time
    assert torch.equal(whole.valid, small.valid)
    assert torch.allclose(whole.value, small.value, equal_nan=True, rtol=0, atol=0)


def test_a_cached_prepared_divisor_does_not_free_its_term_early():
    """``G / (A * G)`` finds its prepared divisor in the cache and reads no value of A * G: the two
    other readers of A * G still find it."""
    ev = random_evidence(k=8, h=6, w=6)
    space = SearchSpace.default()
    memo = BlockMemo(ev, ValueCache(1 << 30), block_rows=4)
    memo.maps([parse("1 / (A * G)")], [frozenset("bkhw")])
    cands = [parse(t) for t in ["G / (A * G)", "A * G + 1", "relu(A * G)"]]
    got = memo.maps(cands, [candidate_axes(c, space) for c in cands])
    want = one_at_a_time(ev, space, cands)
    assert torch.equal(got.raw[0], want.raw[0]) and torch.equal(got.valid, want.valid)
