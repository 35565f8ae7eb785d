"""A tiny, deterministic CNN and image set for fast search tests, examples and benchmarks.

``ToyNet``: conv 3->8 (3x3, stride 2) + ReLU -> ``feat`` (the explained layer, 8 channels at
half resolution) -> conv 1x1 8->8 + ReLU -> a fixed centre-weighted spatial pooling -> linear
to ``classes`` logits (mostly positive weights, like a trained classifier's evidence). The
head after ``feat`` is not a plain global average, so dS/dA varies over space and the classic
CAM methods differ on it (on a GAP head many of them coincide). ``toy_batch`` draws images
with one bright square each (its box is the ground truth); ``toy_problem`` labels each image
with the model's top class.
"""
from __future__ import annotations

import torch
from torch import nn

from ..data.batch import Batch


class ToyNet(nn.Module):
    def __init__(self, size: int = 24, classes: int = 5, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.feat = nn.ReLU()
        self.mix = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU())
        self.fc = nn.Linear(8, classes)
        h = size // 2
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(h), indexing="ij")
        c = (h - 1) / 2
        window = torch.exp(-((yy - c) ** 2 + (xx - c) ** 2) / (2 * (h / 2.5) ** 2))
        self.register_buffer("window", window / window.sum())
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / max(1, p[0].numel()) ** 0.5))
            self.conv.bias.add_(0.1)
            self.mix[0].bias.add_(0.05)
            self.fc.weight.copy_(self.fc.weight.abs() * 2 - 0.3)   # mostly positive evidence
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.feat(self.conv(x))
        pooled = (self.mix(a) * self.window).sum((2, 3))
        return self.fc(pooled)


def toy_batch(n: int = 16, size: int = 24, classes: int = 5, seed: int = 0) -> Batch:
    """``n`` images (b, 3, size, size): noise plus one bright square each, its box and mask."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=g) * 0.3
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    boxes = []
    for i in range(n):
        s = int(torch.randint(size // 4, size // 2, (1,), generator=g))
        y, x = (int(v) for v in torch.randint(0, size - s, (2,), generator=g))
        images[i, :, y:y + s, x:x + s] += 0.6 * torch.rand(3, 1, 1, generator=g)
        masks[i, y:y + s, x:x + s] = True
        boxes.append(torch.tensor([[x, y, x + s, y + s]], dtype=torch.float32))
    images = images.clamp(0, 1)
    labels = torch.randint(0, classes, (n,), generator=g)
    return Batch((images - 0.5) / 0.25, images, labels, masks, boxes, torch.zeros_like(masks),
                 [f"toy{i}" for i in range(n)])


def toy_problem(n: int = 16, size: int = 24, classes: int = 5, seed: int = 0) -> tuple[ToyNet, Batch, str]:
    """(model, batch, layer name) of the toy problem; each image is labelled with the model's top class."""
    model, batch = ToyNet(size, classes, seed), toy_batch(n, size, classes, seed)
    with torch.no_grad():
        batch.labels = model(batch.x).argmax(1)
    return model, batch, "feat"
