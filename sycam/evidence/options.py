"""Settings of the evidence that costs extra passes (perturbation scores, noise, scales).

Each setting is an :class:`Option` (name, default, doc, check), declared once: the built-in ones
below, read by the terminals of :mod:`sycam.evidence.terminals`, and those of terminals a user
registers. :class:`EvidenceOptions` holds a value for every declared option, the papers'
defaults unless given; ``EvidenceOptions.make({...})`` rejects unknown keys with the closest
known ones, and values a setting cannot take (:class:`OptionError`).

No torch at import: the terminal registry reads this module, and ``sycam check`` reads the registry.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import SycamError, UnknownNameError

#: CAMERAS' default input resolutions: range(224, 1000, 100)
CAMERAS_SCALES = tuple(range(224, 1000, 100))


class OptionError(SycamError, ValueError):
    """An evidence option set to a value it cannot take."""


@dataclass(frozen=True)
class Option:
    """A setting that terminals read as ``options.<name>``."""

    name: str
    default: Any
    doc: str
    check: Callable[[Any], Any] | None = None   # value -> the value kept; raises OptionError for one refused


def _score_variant(v: Any) -> Any:
    from .perturbation import SCORE_VARIANTS  # deferred: keeps start-up torch-free

    if v not in SCORE_VARIANTS:
        raise OptionError(f"score_variant {v!r}: choose from {', '.join(SCORE_VARIANTS)}")
    return v


def _flag(v: Any) -> Any:
    if not isinstance(v, bool):
        raise OptionError(f"skip_constant must be True or False, got {v!r}")
    return v


def _ablation_value(v: Any) -> Any:
    number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if not number and v != "gradcam":
        raise OptionError(f"ablation_value must be a finite number or 'gradcam' (grad-cam 1.5.7's "
                          f"min(A) - 1e7 rule), got {v!r}")
    return v


#: every option EvidenceOptions knows, by name: the built-in ones, then those of registered terminals
OPTIONS: dict[str, Option] = {o.name: o for o in [
    Option("max_batch", None, "rows per model call (masked, noisy, scaled inputs); None: by device"),
    Option("score_variant", "official", "Score-CAM masks: official | torchcam | gradcam (softmax included)",
           _score_variant),
    Option("top_k", None, "only the k most active channels get masked forwards"),
    Option("skip_constant", True, "masked families: constant A_k not forwarded (False: S(x ⊙ 0), as the peers)",
           _flag),
    Option("ablation_value", 0.0, "Ablation-CAM: what A_k is set to (a number, or \"gradcam\": grad-cam 1.5.7)",
           _ablation_value),
    Option("ss_n", 10, "SS-CAM samples (paper: 10; torchcam: 35)"),
    Option("ss_sigma", 2.0, "SS-CAM noise std"),
    Option("ss_noise", "mask", "SS-CAM(1) noise on the mask, SS-CAM(2) on the input"),
    Option("is_n", 10, "IS-CAM integration steps"),
    Option("is_schedule", "torchcam", "IS-CAM mask scales: torchcam | linear"),
    Option("mi_bins", 256, "MI-CAM histogram bins"),
    Option("noise_n", 4, "Smooth Grad-CAM++ samples (torchcam default)"),
    Option("noise_sigma", 0.3, "Smooth Grad-CAM++ input noise std (normalised input units)"),
    Option("scales", CAMERAS_SCALES, "CAMERAS input sizes", lambda v: tuple(int(s) for s in v)),
    Option("scale_size", "largest", "common size of As, Gs: largest feature map | input | an int"),
    Option("derivatives", "exact", "H2 / H3: exact diagonals, or a hutchinson estimate of H2"),
    Option("hutchinson_n", 64, "Rademacher probes for the H2 estimate"),
    Option("max_hessian_elements", 20000, "exact diagonals cost one suffix pass per layer element"),
    Option("seed", 0, "random draws (noise samples, probes)"),
    Option("lrp_rule", "zplus", "R (LRP relevance): zplus | epsilon | epsilon_plus (z+ conv, eps linear)"),
    Option("lrp_epsilon", 1e-6, "R: epsilon of the epsilon rule, stabiliser of z+"),
    Option("lrp_contrast", "clrp", "R: clrp (contrastive, the Relevance-CAM code) | none"),
]}


def declare(option: Option) -> None:
    """Make ``option`` a setting of :class:`EvidenceOptions` (a second declaration must be the same)."""
    known = OPTIONS.setdefault(option.name, option)
    if known != option:
        raise SycamError(f"evidence option {option.name} is already declared as {known}; a terminal that reads "
                         "it must use that declaration")


class EvidenceOptions:
    """A value for every declared :class:`Option` (``EvidenceOptions(ss_n=35).ss_n``), its default
    unless given. Immutable and hashable."""

    __slots__ = ("_values",)
    _values: dict[str, Any]

    def __init__(self, **values: Any) -> None:
        for key in values:
            if key not in OPTIONS:
                raise UnknownNameError("evidence option", key, list(OPTIONS))
        kept = {}
        for name, option in OPTIONS.items():
            value = values.get(name, option.default)
            kept[name] = value if option.check is None else option.check(value)
        object.__setattr__(self, "_values", kept)

    @classmethod
    def make(cls, options: EvidenceOptions | Mapping[str, Any] | None = None) -> EvidenceOptions:
        if isinstance(options, cls):
            return options
        return cls(**dict(options or {}))

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        if name in OPTIONS:   # declared after these options were made
            return OPTIONS[name].default
        raise AttributeError(f"no evidence option {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("EvidenceOptions are immutable; make new ones")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EvidenceOptions) and self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._values.items())))

    def __repr__(self) -> str:
        return "EvidenceOptions(" + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"

    def __reduce__(self):
        return EvidenceOptions.make, (self._values,)

    def rows(self, device) -> int:
        """Rows per model call on ``device`` (``max_batch``, or the device's default)."""
        from ..batching import model_rows  # deferred: keeps start-up torch-free

        return model_rows(device, self.max_batch)

    def suffix_rows(self) -> int:
        """Rows per call through the model's suffix only (``max_batch``, or ``SUFFIX_ROWS``)."""
        from ..batching import SUFFIX_ROWS  # deferred: keeps start-up torch-free

        return SUFFIX_ROWS if self.max_batch is None else self.max_batch
