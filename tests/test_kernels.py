"""Compiler: shared sub-expressions, constant folding, safe numerics, post-processing, batching."""
import math

import pytest
import torch

from sycam.evidence.terminals import TERMINALS
from sycam.grammar import parse
from sycam.kernels import compile_expression, finalize, minmax, to_layout, upsample
from sycam.kernels import compiler as compiler_module
from sycam.kernels.batched import weighted_maps
from sycam.kernels.postprocess import fuse


def terms(b=2, k=3, h=4, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    A, G = torch.rand(b, k, h, w, generator=g), torch.randn(b, k, h, w, generator=g)
    return A, G, {"A": to_layout(A, "bkhw"), "G": to_layout(G, "bkhw"), "G2": to_layout(G ** 2, "bkhw"),
                  "G3": to_layout(G ** 3, "bkhw"), "S": to_layout(torch.ones(b), "b")}


def test_shared_subexpressions_are_computed_once(monkeypatch):
    calls = []
    real = compiler_module.apply_op
    monkeypatch.setattr(compiler_module, "apply_op", lambda node, args: calls.append(node.op) or real(node, args))
    gradcam = parse("relu(sum(mean(G, hw) * A, k))")
    xgrad = parse("relu(sum(sum(A * G, hw) / sum(A, hw) * A, k)) + relu(sum(mean(G, hw) * A, k))")
    program = compile_expression([gradcam, xgrad], TERMINALS)
    program(terms()[2])
    # gradcam: mean, mul, sum, relu (4); xgrad adds mul, sum_hw, sum_hw, div, mul, sum_k, relu, add (8)
    assert len(calls) == 12
    assert calls.count("mean") == 1


def test_constants_fold_at_compile_time():
    program = compile_expression(parse("A * (2 ^ 3 - exp(0))"), TERMINALS)
    assert [s.node.op for s in program.steps] == ["mul"]
    A, _, t = terms()
    assert torch.allclose(program(t)[0], A * 7)


def test_results_match_handwritten_torch():
    A, G, t = terms()
    got = compile_expression(parse("relu(sum(sum(A * G, hw) / sum(A, hw) * A, k))"), TERMINALS)(t)[0]
    w = (A * G).sum((2, 3)) / A.sum((2, 3))
    assert torch.allclose(got, torch.relu((w[:, :, None, None] * A).sum(1)), atol=1e-6)
    soft = compile_expression(parse("softmax(mean(G, hw), k)"), TERMINALS)(t)[0]
    assert torch.allclose(soft, G.mean((2, 3)).softmax(1), atol=1e-6)
    std = compile_expression(parse("std(A, hw)"), TERMINALS)(t)[0]
    assert torch.allclose(std, A.flatten(2).std(2, correction=0), atol=1e-6)


@pytest.mark.parametrize("text,expected", [
    ("A / (G - G)", 0.0),            # a denominator that is exactly zero gives 0
    ("log(0 * A)", math.log(2.0 ** -126)),   # log of a non-positive value reads log(TINY)
    ("sqrt(-relu(A))", 0.0),
    ("exp(1000 * A)", None),
    ("(-A)^0.5", None),
    ("(A - A)^-2", 0.0),             # 0^-2 = 1 / 0 = 0
    ("(A - A)^-0.5", 0.0),
])
def test_safe_numerics_give_finite_values(text, expected):
    _, _, t = terms()
    value = compile_expression(parse(text), TERMINALS)(t)[0]
    assert torch.isfinite(value).all(), text
    if expected is not None:
        assert torch.allclose(value, torch.full_like(value, expected)), text


def test_division_is_exact_at_every_scale_and_zero_only_for_a_zero_denominator():
    from sycam.grammar.semantics import safe_div
    x = torch.tensor([1.0, 1.0, 1.0, 0.0, 3e-30, 1.0])
    y = torch.tensor([4.0, 1e-9, -1e-30, 0.0, 1e-30, -0.0])
    assert torch.equal(safe_div(x, y), torch.tensor([0.25, 1.0 / 1e-9, 1.0 / -1e-30, 0.0, 3e-30 / 1e-30, 0.0]))
    assert safe_div(1.0, 0.0) == 0.0 and safe_div(1.0, -0.0) == 0.0 and safe_div(1e-30, 1e-31) == 1e-30 / 1e-31


def test_safe_division_is_odd_in_the_denominator_on_every_path():
    from sycam.grammar.semantics import safe_div
    x = torch.linspace(-2, 3, 10_000)
    for y in (torch.linspace(-1, 1, 10_001)[:10_000],            # mixed signs and a zero: the masked path
              torch.linspace(0.5, 2, 10_000),                      # no zeros: the fast path
              torch.tensor([0.0, -0.0, 1e-9, -1e-9, 2.0] * 2000)):  # signed zeros, tiny values
        q = safe_div(x, y)
        assert torch.isfinite(q).all()
        assert torch.equal(safe_div(x, -y), -q)
        zero = y == 0
        assert torch.equal(q[~zero], x[~zero] / y[~zero])
        assert (q[zero] == 0).all()


def test_signed_power_keeps_sign():
    from sycam.grammar.semantics import safe_pow
    assert torch.allclose(safe_pow(torch.tensor([-4.0, 9.0]), 0.5), torch.tensor([-2.0, 3.0]))
    assert torch.equal(safe_pow(torch.tensor([-2.0]), 3.0), torch.tensor([-8.0]))


def test_overflow_is_reported_invalid_not_raised():
    _, _, t = terms()
    raw = compile_expression(parse("sum(exp(80 * A) * exp(80 * A) * exp(80 * A), k)"), TERMINALS)(t)[0]
    maps, valid = finalize(raw, (8, 10))
    assert not valid.any() and (maps == 0).all()


def test_finalize_upsamples_then_normalises_per_image():
    raw = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[5.0, 5.0], [5.0, 5.0]]])
    maps, valid = finalize(raw, (4, 4))
    assert valid.all()
    assert maps[0].min() == 0 and maps[0].max() == 1
    assert (maps[1] == 0).all()                           # constant map -> zeros, not NaN
    # bilinear with half-pixel centres: corners replicate the corner values
    assert torch.allclose(upsample(raw, (4, 4))[0, 0, 0], torch.tensor(0.0))
    assert torch.allclose(minmax(torch.tensor([[2.0, 4.0]])), torch.tensor([[0.0, 1.0]]))


def test_fusion_rules():
    a = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])                         # right half hot (2x2 layer)
    b = torch.tensor([[[0.0, 0.0, 0.0, 0.0]] * 3 + [[0.0, 0.0, 0.0, 2.0]]])  # bottom-right corner hot (4x4)
    mean, _ = fuse([a, b], (4, 4), "mean")
    top, _ = fuse([a, b], (4, 4), "max")
    layercam, _ = fuse([a, b], (4, 4), "layercam")
    # the corner both layers like is the peak of every rule
    for fused in (mean, top, layercam):
        assert torch.isclose(fused[0, 3, 3], torch.tensor(1.0))
    # the top-right corner only layer a likes: the mean halves it, max and LayerCAM's max keep it
    assert torch.isclose(mean[0, 0, 3], torch.tensor(0.5))
    assert torch.isclose(top[0, 0, 3], torch.tensor(1.0))
    assert torch.isclose(layercam[0, 0, 3], torch.tensor(1.0))
    # attention: per pixel, the layer that is surer weighs more; the shared corner stays the peak
    attention, _ = fuse([a, b], (4, 4), "attention")
    assert torch.isclose(attention[0, 3, 3], torch.tensor(1.0))
    beta_a = torch.softmax(torch.tensor([1.0, 0.0]) / 0.1, 0)[0]        # at the top-right corner
    assert torch.isclose(attention[0, 0, 3], beta_a * 1.0 / attention.new_tensor(1.0), atol=1e-4)
    with pytest.raises(ValueError):
        fuse([a, b], (4, 4), "median")


def test_batched_weights_equal_one_by_one():
    A, G, _ = terms(b=3, k=6, h=5, w=7)
    weights = torch.randn(10, 3, 6)
    batch = weighted_maps(weights, A)
    for n in range(10):
        one = torch.relu((weights[n][:, :, None, None] * A).sum(1))
        assert torch.allclose(batch[n], one, atol=1e-5)
    with pytest.raises(ValueError):
        weighted_maps(torch.randn(2, 3, 5), A)


@pytest.mark.slow
def test_torch_compile_path_matches_eager():
    A, G, t = terms()
    expr = parse("relu(sum(sum(G2 / (2 * G2 + sum(A, hw) * G3) * relu(G), hw) * A, k))")
    eager = compile_expression(expr, TERMINALS)(t)[0]
    fused = compile_expression(expr, TERMINALS).compile()(t)[0]
    assert torch.allclose(eager, fused, atol=1e-5)
