"""Bottom-up enumeration and the equivalence oracle."""
import random

import pytest
import torch
from tiny import GapHead

from sycam.data.batch import Batch
from sycam.grammar import check, parse
from sycam.grammar.symbolic import to_sympy
from sycam.methods.seeds import SEEDS
from sycam.search import Enumerator, EvidenceSet, SearchSpace, candidate_classes
from sycam.search.equivalence import sympy_apply
from sycam.search.toy import toy_problem

pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = dict(operators="+,-,*,/,relu,abs,sum:hw,mean:hw,max:hw", terminals="A,G", constants="2", max_size=4)


@pytest.fixture(scope="module")
def probe():
    model, batch, layer = toy_problem(4)
    return EvidenceSet.capture(model, batch, layer, needs=("A", "G", "G2", "G3"))


def run(space, probe, **kw):
    enum = Enumerator(space, probe, **kw)
    out = [c for chunk in enum.candidates() for c in chunk]
    return enum, out


@pytest.mark.parametrize("result", ["weights", "weight_maps"])
def test_candidates_are_well_typed_in_the_space_and_distinct(probe, result):
    space = SearchSpace(result=result, **SMALL)
    enum, cands = run(space, probe)
    assert enum.stop_reason == "max_size" and len(cands) > 20
    assert len(set(cands)) == len(cands)
    for c in cands:
        assert space.why_not(c) is None
        assert check(c, space.terminal_axes) in space.result_axes
    classes = candidate_classes(space, probe, cands)
    assert len(set(classes)) == len(cands)          # no two share a normalised heatmap
    sizes = [c.size for c in cands]
    assert sizes == sorted(sizes)                    # bottom-up by size


def test_counts_are_monotone_through_the_oracles(probe):
    space = SearchSpace(**SMALL)
    enum, cands = run(space, probe)
    total = 0
    for c in enum.count_table():
        assert c["generated"] >= c["sympy"] >= c["valid"] >= c["observational"]
        assert c["candidates"] >= c["candidates_sympy"] >= c["candidates_observational"]
        assert c["generated"] >= c["candidates"]
        total += c["candidates_observational"]
    assert total == len(cands)
    big = enum.count_table()[-1]
    # every oracle prunes something at size 4
    assert big["generated"] > big["sympy"] > big["observational"] > big["candidates_observational"]


def test_sympy_forms_are_built_one_op_at_a_time_and_the_bank_has_no_two_equal_forms(probe):
    space = SearchSpace(**{**SMALL, "max_size": 5})
    enum, _ = run(space, probe)
    forms = [t.form for t in enum.terms()]
    assert len(set(forms)) == len(forms)
    rng = random.Random(0)
    terms = enum.terms()
    assert len(terms) > 200
    for t in rng.sample(terms, 100):
        assert t.form == to_sympy(t.expr)


def test_sympy_apply_matches_to_sympy_on_every_operator():
    for text in ["A - G / 2", "relu(A) ^ 2", "sqrt(abs(G)) * exp(A)", "log(sigmoid(A) + tanh(G))",
                 "softmax(sum(A, hw), k)", "norm(A * G, hw)", "std(A, hw) - min(G, hw)", "sign(G) * -A"]:
        e = parse(text)
        assert sympy_apply(e, [to_sympy(a) for a in e.args]) == to_sympy(e), text


def test_observational_equivalence_merges_scalings_but_not_relu_variants(probe):
    space = SearchSpace(**SMALL)
    exprs = [parse(t) for t in ["mean(G, hw)", "2 * mean(G, hw)", "sum(G, hw)", "mean(G, hw) / 2",
                                "relu(mean(G, hw))", "mean(relu(G), hw)", "relu(G)"]]
    c = candidate_classes(space, probe, exprs)
    assert c[0] == c[1] == c[2] == c[3]
    assert len({c[0], c[4], c[5], c[6]}) == 4
    # the enumerator yields one smallest representative of each class: sum(G, hw) (sum comes
    # first among the operators), never 2 * mean(G, hw); the relu variants have their own
    _, cands = run(space, probe)
    assert [e in cands for e in exprs[:4]] == [False, False, True, False]
    both = candidate_classes(space, probe, exprs + cands)
    for i in (4, 5, 6):
        assert both.count(both[i]) == 2          # the expression and its one representative


def gap_probe():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 6, 5, 5, generator=g)
    model = GapHead(torch.randn(3, 6, generator=g))
    labels = model(x).argmax(1)
    batch = Batch(x, x[:, :3], labels, torch.ones(4, 5, 5, dtype=torch.bool))
    return EvidenceSet.capture(model, batch, "feat", needs=("A", "G", "G2", "G3"))


def test_seeds_collapse_on_a_gap_head_but_not_on_a_spatial_head(probe):
    """On GAP + linear, dS/dA is constant over space: Grad-CAM = HiResCAM = XGrad-CAM (true
    equivalence on that model); the toy's spatial head keeps them apart."""
    space = SearchSpace.default()
    names = ["gradcam", "hirescam", "xgradcam", "layercam"]
    cands = [space.candidate(SEEDS[n].tree) for n in names]
    gap = candidate_classes(space, gap_probe(), cands)
    assert gap[0] == gap[1] == gap[2]
    assert len(set(candidate_classes(space, probe, cands))) == 4
    enum = Enumerator(space, gap_probe())
    assert [enum.register(n, c) for n, c in zip(names, cands)][:3] == [True, False, False]
    # the smallest member of the class is recorded for the larger seeds
    assert enum.equivalent["gradcam"] == parse("G") and enum.equivalent["xgradcam"] == parse("G")


def test_registered_seed_is_not_yielded_again_and_smaller_equivalent_is_recorded(probe):
    space = SearchSpace(**SMALL)
    enum = Enumerator(space, probe)
    big = parse("sum(A * G, hw) / sum(A, hw) * 2")     # not in SMALL's bounds: a registered seed
    assert enum.register("myseed", big)
    enum2 = Enumerator(space, probe)
    enum2.register("gc2", parse("2 * mean(G, hw)"))
    cands = [c for chunk in enum2.candidates() for c in chunk]
    assert parse("mean(G, hw)") not in cands and parse("sum(G, hw)") not in cands
    assert enum2.equivalent["gc2"] in (parse("mean(G, hw)"), parse("sum(G, hw)"))


def test_memory_budget_stops_enumeration(probe):
    space = SearchSpace(**{**SMALL, "max_size": 9})
    budget = 4 << 20
    enum, cands = run(space, probe, memory_bytes=budget)
    assert enum.stop_reason == "memory"
    assert enum.cache.stats.peak_bytes <= enum.cache.budget <= budget
    assert budget < enum.memory_used <= 1.5 * budget      # checked after every batch of at most budget / 16


def test_sympy_modes_agree_on_what_is_distinct(probe):
    space = SearchSpace(**SMALL)
    counts = {}
    for mode in ("before", "after", "off"):
        enum, cands = run(space, probe, sympy=mode)
        counts[mode] = len(cands)
        if mode == "off":
            assert all(c["sympy"] == c["observational"] for c in enum.count_table())
    # sympy only removes exact algebraic duplicates: the distinct heatmaps barely move
    assert abs(counts["before"] - counts["off"]) <= 0.05 * counts["off"]
