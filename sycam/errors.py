"""Every error sycam raises on purpose derives from :class:`SycamError`.

Callers (the CLI, the search) catch ``SycamError`` to report bad input without a
traceback; anything else escaping is a bug.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class SycamError(Exception):
    """Base class of sycam's own errors."""


class ExpressionSyntaxError(SycamError, ValueError):
    """Text that is not a sentence of the CAM language.

    Carries the 1-based ``line`` and ``column``, the offending ``token`` and the
    tokens that would have been accepted there (``expected``).
    """

    def __init__(self, message: str, *, text: str = "", line: int = 0, column: int = 0,
                 token: str | None = None, expected: Iterable[str] = ()):
        self.text, self.line, self.column, self.token = text, line, column, token
        self.expected = sorted(set(expected))
        super().__init__(message)


class ExpressionTypeError(SycamError, ValueError):
    """A well-formed expression whose axes do not fit (names the sub-expression)."""

    def __init__(self, message: str, *, subexpression: str = ""):
        self.subexpression = subexpression
        super().__init__(message)


class ExpressionValueError(SycamError, ValueError):
    """A well-typed expression whose constants cannot be computed: a literal or a constant
    sub-expression outside the float32 range the evidence is computed in, or a division by a
    constant zero (names the sub-expression)."""

    def __init__(self, message: str, *, subexpression: str = ""):
        self.subexpression = subexpression
        super().__init__(message)


class UnknownNameError(SycamError, KeyError):
    """A name (terminal, seed, layer, metric, ...) that is not known; lists close matches."""

    def __init__(self, kind: str, name: str, known: Iterable[str], hint: str = ""):
        self.kind, self.name, self.known = kind, name, sorted(set(known))
        self.close = close_matches(name, self.known)
        msg = f"unknown {kind} {name!r}"
        if self.close:
            msg += f"; did you mean {', '.join(map(repr, self.close))}?"
        elif self.known and len(self.known) <= 30:
            msg += f"; known: {', '.join(self.known)}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class EvidenceError(SycamError, RuntimeError):
    """The model could not provide the evidence an expression needs."""


class DataError(SycamError, ValueError):
    """Unusable input data (empty image set, unreadable annotations, ...)."""


def close_matches(name: str, known: Iterable[str], n: int = 5) -> list[str]:
    """Known names closest to ``name`` (case-insensitive, then substring matches)."""
    known = list(known)
    lowered = {k.lower(): k for k in known}
    hits = [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)]
    if len(hits) < n and len(name) >= 2:
        hits += [k for k in known if name.lower() in k.lower() and k not in hits][: n - len(hits)]
    return hits
