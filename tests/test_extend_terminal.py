"""A terminal added in one place, as in the README ("Adding a terminal"): registered with the
public function, it parses, type-checks, compiles, is captured on a hand-built model with the
hand-computed value, and reaches ``sycam check`` and the search; unregistered afterwards, so the
other tests see the built-in set."""
import pytest
import torch
from tiny import G0, G1, example_input, spatial_model

import sycam
from sycam.cli import main
from sycam.errors import SycamError, UnknownNameError
from sycam.evidence.capture import capture
from sycam.evidence.options import EvidenceOptions, Option
from sycam.evidence.terminals import TERMINALS, Terminal, register_terminal, unregister_terminal
from sycam.grammar import check, parse, result_kind
from sycam.kernels import compile_expression
from sycam.search import Enumerator, EvidenceSet, SearchSpace
from sycam.search.toy import toy_problem

# Grad-CAM with the gradient's magnitude: w_k = mean_hw |G_k|
EXPR = "relu(sum(mean(Gabs, hw) * A, k))"


@pytest.fixture
def gabs():
    register_terminal(Terminal("Gabs", "bkhw", "|dS/dA|, the gradient's magnitude", lambda c: c["G"].abs(),
                               cost="1 backward", needs=("G",)))
    yield TERMINALS["Gabs"]
    unregister_terminal("Gabs")


def test_added_terminal_gives_the_hand_computed_map(gabs):
    tree = parse(EXPR)
    assert result_kind(tree, TERMINALS) == "heatmap"
    assert check(parse("mean(Gabs, hw)"), TERMINALS) == frozenset("bk")
    program = compile_expression(tree, TERMINALS)

    # spatial_model: A = x and G = V_0 = (G0, G1) for class 0, so Gabs = (|G0|, |G1|)
    ev = capture(spatial_model(), example_input(), "feat", 0, needs={"Gabs"})
    layer = ev.layers["feat"]
    assert set(layer.terms) == {"A", "G", "Gabs", "S"}
    assert torch.equal(layer.terms["Gabs"][0], torch.tensor([G0, G1]).abs()[None])
    # mean_hw |G0| = 0.5, mean_hw |G1| = (1 + 1 + 2 + 0) / 4 = 1: relu(0.5 A0 + A1)
    raw = torch.tensor([[[4.5, 1.0], [1.5, 3.0]]])
    assert torch.allclose(program(layer.layout())[0], raw)

    e = sycam.CAM(EXPR, spatial_model(), "feat").explain(example_input(), 0)
    assert torch.allclose(e.layer_maps["feat"], raw)
    assert torch.allclose(e.maps, (raw - 1.0) / 3.5)                    # min-max of the 2x2 map


def test_added_terminal_reaches_sycam_check_and_the_search(gabs, capsys):
    assert main(["check", EXPR]) == 0
    out = capsys.readouterr().out
    assert "Gabs (|dS/dA|, the gradient's magnitude)" in out and "1 forward + 1 backward" in out

    model, batch, layer = toy_problem(2)
    probe = EvidenceSet.capture(model, batch, layer, needs=("A", "Gabs"))
    space = SearchSpace(result="weights", operators="mean:hw", terminals="A,Gabs", constants="", max_size=2)
    found = [c for chunk in Enumerator(space, probe).candidates() for c in chunk]
    assert parse("mean(Gabs, hw)") in found


def test_a_terminal_declares_its_options():
    power = Option("gpow_p", 1.0, "power of |G| in Gpow")
    register_terminal(Terminal("Gpow", "bkhw", "|dS/dA|^p", lambda c: c["G"].abs().pow(c.options.gpow_p),
                               cost="1 backward", needs=("G",), options=(power,)))
    try:
        assert EvidenceOptions().gpow_p == 1.0
        e = sycam.CAM("relu(sum(mean(Gpow, hw) * A, k))", spatial_model(), "feat",
                      options={"gpow_p": 2}).explain(example_input(), 0)
        # mean_hw G0^2 = 0.5, mean_hw G1^2 = (1 + 1 + 4) / 4 = 1.5: relu(0.5 A0 + 1.5 A1)
        assert torch.allclose(e.layer_maps["feat"], torch.tensor([[[6.5, 1.0], [1.5, 3.5]]]))
    finally:
        unregister_terminal("Gpow")
    with pytest.raises(UnknownNameError, match="gpow_p"):
        EvidenceOptions.make({"gpow_p": 2})
    with pytest.raises(UnknownNameError, match="Gpow"):
        result_kind(parse("mean(Gpow, hw)"), TERMINALS)


def test_registration_refuses_what_capture_could_not_compute():
    g = TERMINALS["G"]
    cases = [(Terminal("G", "bkhw", "again", g.compute), "exists"),
             (Terminal("sum", "bkhw", "an operator's name", g.compute), "operator"),
             (Terminal("Gt", "bhwk", "axes out of order", g.compute), "order"),
             (Terminal("Gt", "khw", "no image axis", g.compute), "include b"),
             (Terminal("Gt", "bkhw", "needs a stranger", g.compute, needs=("Gstranger",)), "Gstranger"),
             (Terminal("Gt", "bkhw", "max_batch again", g.compute, options=(Option("max_batch", 8, "rows"),)),
              "max_batch")]
    for terminal, message in cases:
        with pytest.raises(SycamError, match=message):
            register_terminal(terminal)
    with pytest.raises(SycamError, match="G2, G3 need terminal G"):
        unregister_terminal("G")

    register_terminal(Terminal("Gflat", "bkhw", "a (b, k) tensor under axes b k h w", lambda c: c["G"].mean((2, 3)),
                               needs=("G",)))
    try:
        with pytest.raises(SycamError, match="Gflat gave shape"):
            capture(spatial_model(), example_input(), "feat", 0, needs={"Gflat"})
    finally:
        unregister_terminal("Gflat")
