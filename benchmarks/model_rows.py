"""Forward time per image against rows per model call, on this machine (a script, not a test).

    .venv/bin/python benchmarks/model_rows.py [--threads 1] [--models lite0,resnet18,resnet50,vgg16]

Why: sycam's default rows per model call on a CPU (``sycam.batching.CPU_ROWS``) comes from this
table. Each cell is the best of 2 timings of at least 16 images at 224x224 under
``inference_mode``, in ms per image, and the last column the ratio of the slowest cell to the
one at ``CPU_ROWS``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sycam.batching import CPU_ROWS  # noqa: E402

ROWS = (1, 2, 4, 8, 16, 32, 64)


def model(name: str) -> torch.nn.Module:
    if name == "lite0":
        from sycam.models import load_model
        return load_model().model.eval()
    return getattr(torchvision.models, name)().eval()


def per_image_ms(m: torch.nn.Module, rows: int) -> float:
    x = torch.randn(rows, 3, 224, 224)
    calls = max(1, 16 // rows)
    best = float("inf")
    with torch.inference_mode():
        m(x)
        for _ in range(2):
            t0 = time.perf_counter()
            for _ in range(calls):
                m(x)
            best = min(best, (time.perf_counter() - t0) / (calls * rows))
    return best * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="lite0,resnet18,resnet50,vgg16")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"ms per image by rows per call, {args.threads} thread(s), torch {torch.__version__}")
    print(f"{'model':<10}" + "".join(f"{r:>8}" for r in ROWS) + f"{'worst/' + str(CPU_ROWS):>10}")
    for name in args.models.split(","):
        m = model(name)
        ms = {r: per_image_ms(m, r) for r in ROWS}
        print(f"{name:<10}" + "".join(f"{ms[r]:>8.0f}" for r in ROWS) + f"{max(ms.values()) / ms[CPU_ROWS]:>10.2f}",
              flush=True)


if __name__ == "__main__":
    main()
