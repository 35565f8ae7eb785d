"""The study as the ledger of evaluated expressions: who owns which expression, what is stale.

Every trial a search makes carries two user attributes:

``sycam.worker``  the token of the worker that asked for it (:mod:`sycam.search.workers`);
``sycam``         ``{"expr", "key", "size", "source", ...}`` once its candidate is known:
                  ``expr`` the candidate's text, ``key`` the hash of its canonical form
                  (:func:`expression_key`), ``source`` seed / enumerate / optuna, and where it
                  applies ``seed`` (name), ``duplicate_of`` (the owner of the same key: this
                  trial was not evaluated), ``invalid`` (non-finite maps), ``error``,
                  ``retry_of`` (the trial of a dead worker it repeats) and ``retries``.

A key is **owned** by the one trial that evaluates it: a non-duplicate trial that is
WAITING, RUNNING, COMPLETE or PRUNED (pruned on few images, or invalid), or FAIL with an
``error``. An enumeration chunk being evaluated owns its keys too (study user attribute
``sycam.chunk.<id>``). Everything here runs under the store's claim lock, so the view a
worker acts on is the study's current state. :meth:`Ledger.reap` fails the RUNNING trials
of dead workers and enqueues each once more (``retry_of``), so nothing claimed is lost.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from ..grammar.ast import Expr
from ..grammar.symbolic import canonical_key
from .space import SearchSpace
from .workers import DEFAULT_GRACE, is_dead, leases_of

INFO = "sycam"
WORKER = "sycam.worker"
SETTINGS = "sycam.settings"
WORKING = "sycam.working"     # the working subset of images: initial rows + counterexamples
CHUNK = "sycam.chunk."
MAX_RETRIES = 3


def expression_key(space: SearchSpace, candidate: Expr) -> str:
    """Equal for candidates whose heatmaps are algebraically equal up to a positive factor or an
    added constant (sympy canonical form of the heatmap expression), as a short hash."""
    return hashlib.sha1(canonical_key(space.heatmap(candidate)).encode()).hexdigest()[:20]


def info(trial: FrozenTrial) -> dict:
    return trial.user_attrs.get(INFO) or {}


def is_duplicate(trial: FrozenTrial) -> bool:
    return "duplicate_of" in info(trial)


def is_evaluation(trial: FrozenTrial) -> bool:
    """A finished trial whose candidate was scored (complete, pruned on few images, invalid or an error)."""
    i = info(trial)
    if not i.get("key") or "duplicate_of" in i:
        return False
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "error" in i


@dataclass
class View:
    """The study as one worker sees it under the lock."""

    trials: list[FrozenTrial]
    owners: dict[str, int | str] = field(default_factory=dict)   # key -> trial number or "chunk:<id>"
    done: int = 0              # evaluations finished
    inflight: int = 0          # evaluations claimed or asked, not finished (all workers)
    waiting: int = 0           # WAITING trials (seeds, retries) nobody has asked for yet
    stale: list[FrozenTrial] = field(default_factory=list)        # RUNNING trials of dead workers
    chunks: dict[str, dict] = field(default_factory=dict)         # live or done enumeration chunks
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def claimed(self) -> int:
        return self.done + self.inflight

    def owner(self, key: str) -> int | str | None:
        return self.owners.get(key)


class Ledger:
    """Reads the study into a :class:`View` and writes claims (call under the store lock)."""

    def __init__(self, study, token: str, grace: float = DEFAULT_GRACE):
        self.study = study
        self.token = token
        self.grace = float(grace)

    def view(self) -> View:
        trials = self.study.get_trials(deepcopy=False)
        attrs = dict(self.study.user_attrs)
        leases = leases_of(attrs)
        dead: dict[str, bool] = {}

        def gone(token: str | None) -> bool:
            if token == self.token:
                return False
            if token not in dead:
                dead[token] = is_dead(token, leases, grace=self.grace)
            return dead[token]

        v = View(trials, attrs=attrs)
        for t in trials:
            i = info(t)
            key = i.get("key")
            if t.state == TrialState.RUNNING and gone(t.user_attrs.get(WORKER)):
                v.stale.append(t)
                continue
            if "duplicate_of" in i:
                continue
            if t.state == TrialState.WAITING:
                v.waiting += 1
            if t.state in (TrialState.WAITING, TrialState.RUNNING):
                v.inflight += 1
            elif is_evaluation(t):
                v.done += 1
            else:
                continue
            if key and key not in v.owners:
                v.owners[key] = t.number
        for name, claim in attrs.items():
            if not name.startswith(CHUNK) or not isinstance(claim, dict):
                continue
            cid = name[len(CHUNK):]
            if claim.get("done"):
                v.chunks[cid] = claim
            elif claim.get("worker") and not gone(claim["worker"]):
                v.chunks[cid] = claim
                fresh = [k for k in claim.get("keys", ()) if k not in v.owners]
                for k in fresh:
                    v.owners[k] = f"chunk:{cid}"
                v.inflight += len(fresh)
        return v

    # ------------------------------------------------------------------ writes (under the lock)
    def reap(self, view: View) -> list[int]:
        """Fail the RUNNING trials of dead workers; enqueue each claimed one again (at most
        MAX_RETRIES times). Returns the numbers of the failed trials."""
        failed = []
        for t in view.stale:
            i = info(t)
            try:
                self.study.tell(t.number, state=TrialState.FAIL)
            except (RuntimeError, ValueError):
                continue                 # finished meanwhile by its (slow, not dead) worker
            failed.append(t.number)
            if i.get("key") and "duplicate_of" not in i and int(i.get("retries", 0)) < MAX_RETRIES:
                again = {k: v for k, v in i.items() if k not in ("invalid", "error")}
                again.update(retry_of=t.number, retries=int(i.get("retries", 0)) + 1)
                # a queued trial (seed, mutation, retry) may die before all its fixed parameters are set
                params = dict(t.system_attrs.get("fixed_params") or t.params)
                self.study.enqueue_trial(params, user_attrs={INFO: again})
        return failed

    def claim_chunk(self, cid: str, keys: Iterable[str]) -> None:
        self.study.set_user_attr(CHUNK + cid, {"worker": self.token, "keys": list(keys), "done": False})

    def finish_chunk(self, cid: str, recorded: int) -> None:
        self.study.set_user_attr(CHUNK + cid, {"worker": self.token, "done": True, "recorded": int(recorded)})

    def release_chunk(self, cid: str) -> None:
        self.study.set_user_attr(CHUNK + cid, {"worker": None, "done": False})
