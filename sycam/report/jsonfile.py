"""Results as strict JSON: no NaN or Infinity tokens (JSON has none; strict parsers refuse them)."""
from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every float NaN / inf (numpy's too, at any depth) replaced by None; objects
    with ``as_dict`` (intervals, comparisons) or ``tolist`` (tensors, arrays) converted first."""
    if hasattr(value, "as_dict"):
        return finite(value.as_dict())
    if hasattr(value, "tolist"):
        return finite(value.tolist())
    if isinstance(value, bool) or isinstance(value, numbers.Integral):
        return value if isinstance(value, (bool, int)) else int(value)
    if isinstance(value, numbers.Real):          # float, numpy floats
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def json_text(value: Any) -> str:
    """Strict JSON of ``value`` (NaN / inf become null); objects JSON lacks are written as text."""
    return json.dumps(finite(value), indent=1, allow_nan=False, default=str)


def write_json(path: str | Path, value: Any) -> Path:
    """Write :func:`json_text` of ``value`` to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json_text(value))
    tmp.replace(path)
    return path
