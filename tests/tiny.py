"""Hand-built models whose activations and gradients are known exactly.

``SpatialHead``: the layer ``feat`` is the identity on the input, so A = x, and class c's
score is S_c = sum(V_c * A) (flatten + linear), so G = dS_c/dA = V_c exactly.
``GapHead``: GAP + linear, so G_k = w_ck / (h*w) everywhere and CAM's W = w_c.
"""
import torch
from torch import nn

# the hand-worked example of tests/test_seed_formulas.py: 2 channels, 2x2 positions
A0 = [[1.0, 2.0], [3.0, 4.0]]
A1 = [[4.0, 0.0], [0.0, 1.0]]
G0 = [[1.0, 0.0], [0.0, 1.0]]
G1 = [[-1.0, -1.0], [2.0, 0.0]]


def example_input() -> torch.Tensor:
    return torch.tensor([[A0, A1]])          # (1, 2, 2, 2) = A


class SpatialHead(nn.Module):
    def __init__(self, rows: torch.Tensor):
        super().__init__()
        self.feat = nn.Identity()
        self.fc = nn.Linear(rows[0].numel(), rows.shape[0], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(rows.flatten(1))

    def forward(self, x):
        return self.fc(torch.flatten(self.feat(x), 1))


class GapHead(nn.Module):
    def __init__(self, weights: torch.Tensor):
        super().__init__()
        self.feat = nn.Identity()
        self.fc = nn.Linear(weights.shape[1], weights.shape[0], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(weights)
        self.eval()

    def forward(self, x):
        return self.fc(self.feat(x).mean(dim=(2, 3)))


def spatial_model() -> SpatialHead:
    """Class 0 has V_0 = (G0, G1); class 1 a different pattern."""
    v0 = torch.tensor([G0, G1])
    v1 = torch.tensor([[[0.5, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.25]]])
    return SpatialHead(torch.stack([v0, v1])).eval()
