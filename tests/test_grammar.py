"""The language: parsing, printing, errors, typing and the sympy bridge."""
import pytest

from sycam.errors import ExpressionSyntaxError, ExpressionTypeError, UnknownNameError
from sycam.evidence.terminals import TERMINALS
from sycam.grammar import check, parse, result_kind, to_text
from sycam.grammar.ast import Call, Num, Var
from sycam.grammar.parser import MAX_DEPTH, MAX_SIZE, MAX_TEXT
from sycam.grammar.symbolic import canonical_key, from_sympy, latex, simplify, to_sympy
from sycam.methods import SEEDS


def test_precedence_and_associativity():
    assert parse("a - b - c") == Call("sub", (Call("sub", (Var("a"), Var("b"))), Var("c")))
    assert parse("a ^ b ^ c") == Call("pow", (Var("a"), Call("pow", (Var("b"), Var("c")))))
    assert parse("-x ^ 2") == Call("neg", (Call("pow", (Var("x"), Num(2))),))
    assert parse("a + b * c") == Call("add", (Var("a"), Call("mul", (Var("b"), Var("c")))))
    assert parse("x ^ -2") == Call("pow", (Var("x"), Num(-2)))       # -number folds to a constant
    assert parse("sum(A, wh)") == parse("sum(A, hw)")                 # axes in storage order


@pytest.mark.parametrize("text", [s.expression for s in SEEDS.values()] + [
    "a - (b - c)", "(a - b) - c", "(-2)^x", "--x", "a - -2", "2^3^4", "(2^3)^4", "-(a * b)", "-a * b",
    "where(G >= 0.5, A, -1)", "1e-07 * x", "norm(softmax(A, k), hw)", "x / (y / z)", "x / y / z"])
def test_print_parse_round_trip(text):
    tree = parse(text)
    assert parse(to_text(tree)) == tree


def test_syntax_error_names_position_token_and_expected():
    with pytest.raises(ExpressionSyntaxError) as err:
        parse("relu(sum(G, hw) * * A)")
    e = err.value
    assert (e.line, e.column, e.token) == (1, 19, "*")
    assert "a name" in e.expected and "'('" in e.expected
    assert "line 1, column 19" in str(e) and "^" in str(e)


def test_syntax_error_on_a_later_line():
    with pytest.raises(ExpressionSyntaxError) as err:
        parse("relu(\n  sum(G, hw)\n  A)")
    assert (err.value.line, err.value.column, err.value.token) == (3, 3, "A")


def test_unexpected_end_and_character():
    with pytest.raises(ExpressionSyntaxError, match="end of input") as err:
        parse("relu(A")
    assert "')'" in err.value.expected
    with pytest.raises(ExpressionSyntaxError, match=r"character '\$' at line 1, column 3"):
        parse("A $ G")
    with pytest.raises(ExpressionSyntaxError, match="empty"):
        parse("   ")


def test_unknown_function_lists_close_matches():
    with pytest.raises(UnknownNameError) as err:
        parse("rellu(sum(A, k))")
    assert "relu" in err.value.close and "did you mean 'relu'" in str(err.value)


def test_unknown_terminal_lists_close_matches():
    with pytest.raises(UnknownNameError) as err:
        check(parse("relu(sum(G4 * A, k))"), TERMINALS)
    assert {"G", "G2", "G3"} & set(err.value.close)


def test_bad_call_shapes():
    with pytest.raises(ExpressionSyntaxError, match="axes"):
        parse("sum(A, G)")
    with pytest.raises(ExpressionSyntaxError, match="2 arguments"):
        parse("mean(A)")
    with pytest.raises(ExpressionSyntaxError, match="comparison"):
        parse("where(A, 1, 2)")
    with pytest.raises(ExpressionSyntaxError, match="only allowed"):
        parse("relu(A > 0)")
    with pytest.raises(ExpressionSyntaxError, match="1 argument"):
        parse("relu(A, G)")


def test_size_depth_and_length_bounds():
    with pytest.raises(ExpressionSyntaxError, match="deeply nested"):
        parse("relu(" * (MAX_DEPTH + 1) + "A" + ")" * (MAX_DEPTH + 1))
    balanced = "A"
    while balanced.count("A") <= MAX_SIZE:   # a shallow but wide tree: depth 9, > MAX_SIZE nodes
        balanced = f"({balanced} + {balanced})"
    with pytest.raises(ExpressionSyntaxError, match="too large"):
        parse(balanced)
    with pytest.raises(ExpressionSyntaxError, match="too long"):
        parse("A" + " " * MAX_TEXT)
    # nesting far beyond Python's recursion limit still gives our error, not RecursionError
    with pytest.raises(ExpressionSyntaxError):
        parse("-" * 3000 + "A")
    with pytest.raises(ExpressionSyntaxError):
        parse("(" * 3000 + "A" + ")" * 3000)


def test_types_of_terminals_reductions_and_broadcast():
    assert check(parse("A"), TERMINALS) == frozenset("bkhw")
    assert check(parse("mean(G, hw)"), TERMINALS) == frozenset("bk")
    assert check(parse("sum(A * S, k)"), TERMINALS) == frozenset("bhw")
    assert check(parse("softmax(W, k)"), TERMINALS) == frozenset("bk")
    assert check(parse("pc1(A)"), TERMINALS) == frozenset("bhw")
    assert result_kind(parse("sum(A, k)"), TERMINALS) == "heatmap"
    assert result_kind(parse("mean(G, hw)"), TERMINALS) == "weights"


def test_type_error_names_the_subexpression_and_its_axes():
    with pytest.raises(ExpressionTypeError) as err:
        check(parse("relu(sum(mean(S, hw) * A, k))"), TERMINALS)
    assert err.value.subexpression == "mean(S, hw)"
    assert "{b}" in str(err.value) and "{h, w}" in str(err.value)
    with pytest.raises(ExpressionTypeError, match=r"reduce k"):
        result_kind(parse("relu(G * A)"), TERMINALS)
    with pytest.raises(ExpressionTypeError, match="neither a heatmap"):
        result_kind(parse("sum(A, khw)"), TERMINALS)
    with pytest.raises(ExpressionTypeError, match="pc1"):
        check(parse("pc1(mean(A, hw))"), TERMINALS)


def test_types_follow_the_evidence_axes():
    multiscale = {**{k: t.axes for k, t in TERMINALS.items()}, "A": "bskhw", "G": "bskhw"}
    assert result_kind(parse("relu(sum(mean(A, s) * mean(G, s), k))"), multiscale) == "heatmap"
    with pytest.raises(ExpressionTypeError):
        check(parse("mean(A, s)"), TERMINALS)   # single-scale evidence has no s axis


def test_sympy_simplifies_and_canonicalises():
    assert to_text(simplify(parse("relu(sum(A*G, k)) - relu(sum(G*A, k))"))) == "0"
    assert to_text(simplify(parse("norm(2 * A + 1, hw)"))) == "norm(A, hw)"
    assert to_text(simplify(parse("sign(G) * abs(G)"))) == "G"
    # commutativity and positive scale (invisible after min-max) share a key
    assert canonical_key(parse("relu(sum(mean(G, hw) * A, k))")) == \
        canonical_key(parse("3 * relu(sum(A * mean(2 * G, hw), k)) + 1"))
    # a negative scale does not
    assert canonical_key(parse("relu(sum(A * G, k))")) != canonical_key(parse("relu(-sum(A * G, k))"))


def test_sympy_keeps_safe_semantics():
    # exp(log(x)) is max(x, eps) here, not x; sqrt is sqrt(max(x,0)); x^0.5 is sign-preserving
    assert to_text(simplify(parse("exp(log(A))"))) == "exp(log(A))"
    assert to_text(simplify(parse("A^0.5 * A^0.5"))) != "A"


def test_sympy_round_trip_of_seeds():
    for seed in SEEDS.values():
        tree = seed.tree
        back = from_sympy(to_sympy(tree))
        assert canonical_key(back, normalised=False) == canonical_key(tree, normalised=False)
        assert any(word in latex(tree) for word in ("operatorname", "sum", r"\max")), seed.name


def test_latex_of_gradcam():
    assert latex(parse("relu(sum(mean(G, hw) * A, k))")) == \
        r"\operatorname{ReLU}\left(\sum_{k} A \operatorname{mean}_{h,w}\left(G\right)\right)"


def test_latex_of_a_squared_reduction_wraps_it_in_parentheses():
    assert latex(parse("A * sum(G2, hw) * sum(G2, hw)")) == r"A \left(\sum_{h,w} G^{(2)}\right)^{2}"
