"""H2 / H3: true diagonal derivatives by autograd over the suffix, against full Hessians."""
import pytest
import torch
from torch import nn

import sycam
from sycam.errors import EvidenceError


class Smooth(nn.Module):
    """A smooth head after the layer ``feat``: S depends non-linearly on A."""

    def __init__(self):
        super().__init__()
        self.feat = nn.Conv2d(3, 2, 1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        a = self.feat(x)
        return self.fc(torch.tanh(a).flatten(1) ** 2)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return Smooth().eval()


def full_derivatives(model, x, c):
    A = model.feat(x).detach()

    def s_of(a):
        return model.fc(torch.tanh(a).flatten(1) ** 2)[:, c].sum()
    H = torch.autograd.functional.hessian(s_of, A).reshape(A.numel(), A.numel())
    h2 = H.diagonal().reshape(A.shape)
    # third diagonal: d/dA_i of H_ii, by autograd of the Hessian diagonal
    a = A.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(s_of(a), a, create_graph=True)
    h3 = torch.stack([torch.autograd.grad(torch.autograd.grad(g.flatten()[i], a, create_graph=True)[0].flatten()[i],
                                          a, retain_graph=True)[0].flatten()[i]
                      for i in range(A.numel())]).reshape(A.shape)
    return h2, h3


def test_exact_diagonals_match_the_full_hessian(model):
    x = torch.randn(2, 3, 2, 2)
    ev = sycam.capture(model, x, ["feat"], [1, 2], needs={"A", "H2", "H3"}, options={"max_batch": 3})
    for i, c in enumerate([1, 2]):
        h2, h3 = full_derivatives(model, x[i:i + 1], c)
        assert torch.allclose(ev.layers["feat"].terms["H2"][0][i], h2[0], atol=1e-5)
        assert torch.allclose(ev.layers["feat"].terms["H3"][0][i], h3[0], atol=1e-5)


def test_hutchinson_estimate_converges_to_the_diagonal(model):
    x = torch.randn(1, 3, 2, 2)
    ev = sycam.capture(model, x, ["feat"], 0, needs={"A", "H2"},
                       options={"derivatives": "hutchinson", "hutchinson_n": 4000, "max_batch": 500})
    h2, _ = full_derivatives(model, x, 0)
    est = ev.layers["feat"].terms["H2"][0]
    assert torch.allclose(est, h2, atol=0.15 * float(h2.abs().max()))


def test_piecewise_linear_head_has_zero_true_second_derivative():
    # for a ReLU network after the layer, d2y/dA2 = 0 and the closed form is exact
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)).eval()
    ev = sycam.capture(net, torch.randn(1, 3, 2, 2), ["0"], 0, needs={"A", "H2", "H3"})
    assert (ev.layers["0"].terms["H2"][0] == 0).all() and (ev.layers["0"].terms["H3"][0] == 0).all()


def test_true_gradcampp_expression_runs_and_big_layers_are_refused(model):
    expr = "relu(sum(sum((G^2 + H2) / (2 * (G^2 + H2) + sum(A, hw) * (G^3 + 3 * G * H2 + H3)) * relu(G), hw) * A, k))"
    maps = sycam.CAM(expr, model, "feat")(torch.randn(2, 3, 2, 2))
    assert torch.isfinite(maps).all()
    with pytest.raises(EvidenceError, match="hutchinson"):
        sycam.capture(model, torch.randn(1, 3, 2, 2), ["feat"], 0, needs={"H2"},
                      options={"max_hessian_elements": 4})
