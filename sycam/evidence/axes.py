"""Evidence along axes beyond one pass: input scales (s) and noise samples (v).

Scales (CAMERAS, Jalwana et al. 2021): the images are resized (bicubic) to each size in
``options.scales``, A and G are captured at every size for the same target class, resized
bilinearly to one common size and stacked on s: terminals ``As``, ``Gs`` (b,s,k,h,w) and
``keep`` (b,s), 1 where the model's top-1 at that scale equals its top-1 on the original
images (CAMERAS averages only those scales: mean_s over kept scales = sum(keep * As, s) /
sum(keep, s); the original size, if listed, is always kept).

Noise (Smooth Grad-CAM++, Omeiza et al. 2019): ``options.noise_n`` copies x + N(0, sigma^2)
give ``Av``, ``Gv`` with axes (b,v,k,h,w) (the terminals ``G2v`` = Gv^2, ``G3v`` = Gv^3 derive
from Gv); the clean A, G stay available.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import EvidenceError, SycamError
from .forward import single_pass
from .layers import LayerRef
from .options import EvidenceOptions
from .targets import fix_target, target_rows


def _common_size(sizes: list[tuple[int, int]], how: str | int, x: Tensor) -> tuple[int, int]:
    if how == "largest":
        return max(sizes)
    if how == "input":
        return int(x.shape[-2]), int(x.shape[-1])
    return int(how), int(how)


def _resize(t: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(t.shape[-2:]) == size:
        return t
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)


def scale_terms(model: nn.Module, x: Tensor, refs: list[LayerRef], target: Any, logits: Tensor,
                output: Any, options: EvidenceOptions) -> dict[str, dict[str, Tensor]]:
    """Per layer: As, Gs (b,s,k,h,w) at a common size and keep (b,s)."""
    bound = fix_target(target, logits)
    predicted = logits.argmax(1)
    per_scale = []
    for size in options.scales:
        xs = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
        try:
            ev = single_pass(model, xs, refs, bound, {"A", "G"}, output)
        except SycamError:
            raise
        except Exception as err:   # e.g. torchvision's ViT, built for one input size
            raise EvidenceError(f"the model refused the input size {size}x{size} ({type(err).__name__}: {err}); the "
                                "scale terminals (As, Gs, keep: CAMERAS) resize the images: give evidence option "
                                f"scales with sizes the model takes (e.g. scales=[{x.shape[-1]}])") from None
        per_scale.append((ev, (ev.logits.argmax(1) == predicted).to(x.dtype)))
    keep = torch.stack([k for _, k in per_scale], dim=1)
    out = {}
    for ref in refs:
        sizes = [tuple(ev.layers[ref.name].A.shape[-2:]) for ev, _ in per_scale]
        common = _common_size(sizes, options.scale_size, x)
        As = torch.stack([_resize(ev.layers[ref.name].A, common) for ev, _ in per_scale], dim=1)
        Gs = torch.stack([_resize(ev.layers[ref.name].terms["G"][0], common) for ev, _ in per_scale], dim=1)
        out[ref.name] = {"As": As, "Gs": Gs, "keep": keep}
    return out


def noise_terms(model: nn.Module, x: Tensor, refs: list[LayerRef], target: Any, logits: Tensor,
                output: Any, options: EvidenceOptions) -> dict[str, dict[str, Tensor]]:
    """Per layer: Av, Gv (b,v,k,h,w) from noise_n noisy copies of each image."""
    bound = fix_target(target, logits)
    b, n = x.shape[0], options.noise_n
    gen = torch.Generator(device=x.device).manual_seed(options.seed)
    noise = torch.randn((b, n, *x.shape[1:]), generator=gen, device=x.device, dtype=x.dtype)
    noisy = (x[:, None] + options.noise_sigma * noise).reshape(b * n, *x.shape[1:])
    image = torch.arange(b, device=x.device).repeat_interleave(n)     # the image each noisy row copies
    chunks = []
    step = options.rows(x.device)
    for start in range(0, b * n, step):
        part = target_rows(bound, image[start:start + step])
        chunks.append(single_pass(model, noisy[start:start + step], refs, part, {"A", "G"}, output))
    out = {}
    for ref in refs:
        A = torch.cat([ev.layers[ref.name].A for ev in chunks])
        G = torch.cat([ev.layers[ref.name].terms["G"][0] for ev in chunks])
        A, G = A.reshape(b, n, *A.shape[1:]), G.reshape(b, n, *G.shape[1:])
        out[ref.name] = {"Av": A, "Gv": G}
    return out
