"""Settings of the evidence that costs extra passes (perturbation scores, noise, scales).

One frozen dataclass with the papers' defaults; ``EvidenceOptions.make({...})`` rejects
unknown keys with the closest known ones, and values a setting cannot take (:class:`OptionError`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from ..batching import SUFFIX_ROWS, model_rows
from ..errors import SycamError, UnknownNameError
from .perturbation import SCORE_VARIANTS

#: CAMERAS' default input resolutions: range(224, 1000, 100)
CAMERAS_SCALES = tuple(range(224, 1000, 100))


class OptionError(SycamError, ValueError):
    """An evidence option set to a value it cannot take."""


@dataclass(frozen=True)
class EvidenceOptions:
    max_batch: int | None = None       # rows per model call (masked, noisy, scaled inputs); None: by device
    score_variant: str = "official"    # Score-CAM masks: official | torchcam | gradcam (softmax included)
    top_k: int | None = None           # only the k most active channels get masked forwards
    skip_constant: bool = True         # masked families: constant A_k not forwarded (False: S(x ⊙ 0), as the peers)
    ablation_value: float | str = 0.0  # Ablation-CAM: what A_k is set to (a number, or "gradcam": grad-cam 1.5.7)
    ss_n: int = 10                     # SS-CAM samples (paper: 10; torchcam: 35)
    ss_sigma: float = 2.0              # SS-CAM noise std
    ss_noise: str = "mask"             # SS-CAM(1) noise on the mask, SS-CAM(2) on the input
    is_n: int = 10                     # IS-CAM integration steps
    is_schedule: str = "torchcam"      # IS-CAM mask scales: torchcam | linear
    mi_bins: int = 256                 # MI-CAM histogram bins
    noise_n: int = 4                   # Smooth Grad-CAM++ samples (torchcam default)
    noise_sigma: float = 0.3           # Smooth Grad-CAM++ input noise std (normalised input units)
    scales: tuple[int, ...] = CAMERAS_SCALES  # CAMERAS input sizes
    scale_size: str | int = "largest"  # common size of As, Gs: largest feature map | input | an int
    derivatives: str = "exact"         # H2 / H3: exact diagonals, or a hutchinson estimate of H2
    hutchinson_n: int = 64             # Rademacher probes for the H2 estimate
    max_hessian_elements: int = 20000  # exact diagonals cost one suffix pass per layer element
    seed: int = 0                      # random draws (noise samples, probes)
    lrp_rule: str = "zplus"            # R (LRP relevance): zplus | epsilon | epsilon_plus (z+ conv, eps linear)
    lrp_epsilon: float = 1e-6          # R: epsilon of the epsilon rule, stabiliser of z+
    lrp_contrast: str = "clrp"         # R: clrp (contrastive, the Relevance-CAM code) | none

    @classmethod
    def make(cls, options: "EvidenceOptions | dict[str, Any] | None" = None) -> "EvidenceOptions":
        if options is None:
            return cls()
        if isinstance(options, cls):
            return options
        known = [f.name for f in fields(cls)]
        for key in options:
            if key not in known:
                raise UnknownNameError("evidence option", key, known)
        values = dict(options)
        if "scales" in values:
            values["scales"] = tuple(int(s) for s in values["scales"])
        return replace(cls(), **values)

    def __post_init__(self) -> None:
        if self.score_variant not in SCORE_VARIANTS:
            raise OptionError(f"score_variant {self.score_variant!r}: choose from {', '.join(SCORE_VARIANTS)}")
        if not isinstance(self.skip_constant, bool):
            raise OptionError(f"skip_constant must be True or False, got {self.skip_constant!r}")
        v = self.ablation_value
        number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not number and v != "gradcam":
            raise OptionError(f"ablation_value must be a finite number or 'gradcam' (grad-cam 1.5.7's "
                              f"min(A) - 1e7 rule), got {v!r}")

    def rows(self, device) -> int:
        """Rows per model call on ``device`` (``max_batch``, or the device's default)."""
        return model_rows(device, self.max_batch)

    def suffix_rows(self) -> int:
        """Rows per call through the model's suffix only (``max_batch``, or ``SUFFIX_ROWS``)."""
        return SUFFIX_ROWS if self.max_batch is None else self.max_batch
