"""The kernel PCA operators (KPCA-CAM's kpc1_rbf, kpc1_sigmoid) through every part that reads an
operator: parser and printer, checker, simplifier and LaTeX, compiler, search space, ``sycam check``.
Their values: tests/test_seed_formulas.py (by hand), tests/test_seed_scales.py (at every scale),
tests/test_parity_peers.py (grad-cam's KPCA_CAM)."""
import math

import pytest
import torch

from sycam.cli import main
from sycam.errors import ExpressionTypeError
from sycam.evidence.terminals import TERMINALS
from sycam.grammar import check, parse, to_text
from sycam.grammar.symbolic import canonical_key, latex, simplify
from sycam.kernels import compile_expression, to_layout
from sycam.search import Enumerator, EvidenceSet, SearchSpace
from sycam.search.toy import toy_problem


@pytest.mark.parametrize("kernel", ["rbf", "sigmoid"])
def test_kpc1_parses_types_simplifies_and_compiles(kernel):
    op = f"kpc1_{kernel}"
    tree = parse(f"relu({op}(G * A))")
    assert to_text(tree) == f"relu({op}(G * A))"
    assert check(tree, TERMINALS) == frozenset("bhw")                # like pc1: needs k, h, w; removes k
    with pytest.raises(ExpressionTypeError, match=r"needs \{k, h, w\}"):
        check(parse(f"{op}(mean(A, hw))"), TERMINALS)
    # uninterpreted in the algebra: the arithmetic around it simplifies, no identity applies to it
    # (unlike pc1, a kernel is not scale-free: kpc1(2 A) is not 2 kpc1(A))
    assert to_text(simplify(parse(f"{op}(A) * 2 / 2"))) == f"{op}(A)"
    assert canonical_key(parse(f"{op}(2 * A)")) != canonical_key(parse(f"2 * {op}(A)"))
    assert canonical_key(parse(f"{op}(A)")) != canonical_key(parse("pc1(A)"))
    assert latex(parse(f"{op}(A)")) == r"\operatorname{KPC}_1^{\mathrm{%s}}\left(A\right)" % kernel

    # compiled: sklearn's KernelPCA (gamma = 1 / K) of the positions' centred channel vectors
    KernelPCA = pytest.importorskip("sklearn.decomposition").KernelPCA       # (grad-cam's dependency)
    g = torch.Generator().manual_seed(0)
    A = torch.rand(2, 5, 3, 4, generator=g, dtype=torch.float64)
    got = compile_expression(parse(f"{op}(A)"), TERMINALS)({"A": to_layout(A, "bkhw")})[0]
    for i in range(2):
        X = A[i].flatten(1).T.numpy()
        ref = KernelPCA(n_components=1, kernel=kernel, eigen_solver="dense").fit_transform(X - X.mean(0))
        torch.testing.assert_close(got[i], torch.from_numpy(ref[:, 0]).reshape(3, 4))
    # an image with a non-finite activation gets an invalid (NaN) map, the other its own
    A[1, 2, 0, 0] = math.inf
    got = compile_expression(parse(f"{op}(A)"), TERMINALS)({"A": to_layout(A, "bkhw")})[0]
    assert torch.isfinite(got[0]).all() and torch.isnan(got[1]).all()


def test_the_search_enumerates_kpc1_in_a_heatmap_space():
    model, batch, layer = toy_problem(2)
    probe = EvidenceSet.capture(model, batch, layer, needs=("A",))
    space = SearchSpace(result="heatmap", operators="relu,kpc1_rbf", terminals="A", constants="", max_size=3)
    found = {to_text(c) for chunk in Enumerator(space, probe).candidates() for c in chunk}
    assert "kpc1_rbf(A)" in found


def test_sycam_check_knows_kpc1(capsys):
    assert main(["check", "relu(kpc1_sigmoid(A))"]) == 0
    out = capsys.readouterr().out
    assert "heatmap" in out and r"\operatorname{KPC}_1^{\mathrm{sigmoid}}" in out
    assert main(["check", "kpc1(A)"]) != 0
    assert "did you mean" in capsys.readouterr().err
