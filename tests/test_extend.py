"""Extending the language in one place: an operator registered with one call is parsed, typed,
printed, simplified, compiled, enumerated by the search and accepted by ``sycam check``; with a
terminal registered the same way (tests/test_extend_terminal.py), both work together."""
import math

import pytest
import torch
from tiny import G0, G1, example_input, spatial_model

import sycam
from sycam.cli import main
from sycam.evidence.terminals import TERMINALS, Terminal, register_terminal, unregister_terminal
from sycam.grammar import check, parse, to_text
from sycam.grammar.ops import ELEMENTWISE, OPS, Op, register, unregister
from sycam.grammar.symbolic import canonical_key, latex, simplify
from sycam.kernels import compile_expression, to_layout
from sycam.search import Enumerator, EvidenceSet, SearchSpace
from sycam.search.toy import toy_problem


def softplus(x):
    """log(1 + e^x), on floats (constant folding) and tensors."""
    if isinstance(x, float):
        return math.log1p(math.exp(-abs(x))) + max(x, 0.0)
    return torch.nn.functional.softplus(x)


@pytest.fixture
def softplus_op():
    op = register(Op("softplus", 1, "log(1 + e^x)", ELEMENTWISE, lower=lambda args, dims: softplus(args[0]),
                     latex=r"\operatorname{softplus}\left(%(0)s\right)"))
    yield op
    unregister("softplus")


def test_a_registered_operator_parses_types_prints_and_simplifies(softplus_op):
    tree = parse("relu(sum(softplus(mean(G, hw)) * A, k))")
    assert to_text(tree) == "relu(sum(softplus(mean(G, hw)) * A, k))"
    assert check(tree, TERMINALS) == frozenset("bhw")
    # uninterpreted in the algebra: no identity of another function is applied to it, but
    # the algebra around it still works
    assert to_text(simplify(parse("softplus(G) * 2 / 2"))) == "softplus(G)"
    assert canonical_key(parse("softplus(G) + softplus(G)")) == canonical_key(parse("2 * softplus(G)"))
    assert canonical_key(parse("softplus(2 * G)")) != canonical_key(parse("2 * softplus(G)"))
    assert latex(parse("softplus(G)")) == r"\operatorname{softplus}\left(G\right)"


def test_a_registered_operator_compiles_and_folds(softplus_op):
    g = torch.Generator().manual_seed(0)
    A, G = torch.rand(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    terms = {"A": to_layout(A, "bkhw"), "G": to_layout(G, "bkhw")}
    got = compile_expression(parse("relu(sum(softplus(mean(G, hw)) * A, k))"), TERMINALS)(terms)[0]
    weights = torch.log1p(torch.exp(G.mean(dim=(2, 3))))            # by hand
    expected = torch.relu((weights[:, :, None, None] * A).sum(1))
    torch.testing.assert_close(got, expected)
    folded = compile_expression(parse("A * softplus(0)"), TERMINALS)
    assert [s.node.op for s in folded.steps] == ["mul"]             # softplus(0) = log 2 folded
    torch.testing.assert_close(folded(terms)[0], A * math.log(2))


def test_the_search_enumerates_a_registered_operator(softplus_op):
    model, batch, layer = toy_problem(4)
    probe = EvidenceSet.capture(model, batch, layer, needs=("A", "G"))
    space = SearchSpace(operators="softplus,mean:hw", terminals="G", max_size=3, result="weights")
    enum = Enumerator(space, probe)
    found = {to_text(c) for chunk in enum.candidates() for c in chunk}
    assert "softplus(mean(G, hw))" in found or "mean(softplus(G), hw)" in found
    assert "mean(G, hw)" in found


def test_sycam_check_accepts_a_registered_operator(softplus_op, capsys):
    assert main(["check", "relu(sum(softplus(mean(G, hw)) * A, k))"]) == 0
    out = capsys.readouterr().out
    assert "softplus" in out and "heatmap" in out
    assert main(["check", "relu(sum(softplus(mean(G, hw), k) * A, k))"]) != 0   # arity from the record


def test_an_unregistered_operator_is_unknown_again(softplus_op):
    unregister("softplus")
    with pytest.raises(Exception, match="softplus"):
        parse("softplus(G)")
    register(softplus_op)                     # for the fixture's teardown
    assert OPS["softplus"] is softplus_op


@pytest.fixture
def gabs():
    register_terminal(Terminal("Gabs", "bkhw", "|dS/dA|", lambda c: c["G"].abs(), cost="1 backward", needs=("G",)))
    yield TERMINALS["Gabs"]
    unregister_terminal("Gabs")


def test_an_added_operator_and_terminal_work_together(softplus_op, gabs, capsys):
    """Each added in one place; used from parsed text through the compiler, the enumerator and check."""
    text = "relu(sum(softplus(mean(Gabs, hw)) * A, k))"
    # spatial_model: A = x and G = (G0, G1) for class 0; by hand, w_k = softplus(mean_hw |G_k|)
    e = sycam.CAM(text, spatial_model(), "feat").explain(example_input(), 0)
    A = example_input()[0]
    w = torch.log1p(torch.exp(torch.tensor([G0, G1]).abs().mean(dim=(1, 2))))
    torch.testing.assert_close(e.layer_maps["feat"][0], torch.relu((w[:, None, None] * A).sum(0)))

    model, batch, layer = toy_problem(2)
    probe = EvidenceSet.capture(model, batch, layer, needs=("A", "Gabs"))
    space = SearchSpace(result="weights", operators="softplus,mean:hw", terminals="Gabs", constants="", max_size=3)
    found = {to_text(c) for chunk in Enumerator(space, probe).candidates() for c in chunk}
    assert found & {"softplus(mean(Gabs, hw))", "mean(softplus(Gabs), hw)"}

    assert main(["check", text]) == 0
    out = capsys.readouterr().out
    assert "Gabs (|dS/dA|)" in out and "heatmap" in out
