"""``auto``'s measurement of which backend is fastest, made on the run's own first batches.

A separate probe (random input, a tight loop of forward passes before the run) misjudged: for
SSCFNet it timed OpenVINO at 0.80 x PyTorch's time, while inside the run, between the engine's
reading, blending and writing, OpenVINO's forward passes took 1.06 x PyTorch's
(docs/performance.md). So the candidates take turns on batches the run needs anyway, and each
batch's result is used: every candidate computes the run's arithmetic (ONNX Runtime fp32 where
the others use bf16), and their labels agree on at least 99.9 % of pixels. A challenger
runs once untimed (its first call allocates and tunes kernels), then alternates with the
reference (PyTorch, or for int8 the first runtime that loads) over :data:`TIMED_TURNS` batches
each, so both see the machine in the same state. Only full batches are timed. One challenger
session is alive at a time. When every challenger has had its turns the fastest runs the rest,
and the ranking is stored, so later runs of the same network, tile, batch and arithmetic on this
CPU skip the race.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..memory import release_freed_memory
from . import measure
from .backend import Forward, InferenceBackend, engine_forward
from .cache import BackendCacheError

log = logging.getLogger(__name__)

#: Timed batches of each challenger, each followed by a timed one of the reference; the shortest of
#: each candidate counts, the least disturbed by other work.
TIMED_TURNS = 2

#: Builds a candidate by name (raises InputError when it cannot run here).
Build = Callable[[str], InferenceBackend]
#: Builds the first of an ordered list of names that can run, with the given reason.
Fallback = Callable[[list[str], str], InferenceBackend]


class BackendRace:
    """A backend for the engine that is ``auto`` deciding: candidates take turns until one is fastest.

    It has what the engine reads from an :class:`~.backend.InferenceBackend` (``name``, ``precision``,
    ``autocast``, ``channels_last``, ``describe()`` and the call). Each candidate is called in its own
    layout and autocast (:func:`~.backend.engine_forward`), so the race itself asks for neither.
    ``describe()`` names the winner once the race is over, and says how far it got when the run ended
    first.
    """

    autocast: torch.dtype | None = None
    channels_last = False

    def __init__(self, candidates: Sequence[str], *, build: Build, fallback: Fallback, device: torch.device,
                 batch_size: int, record: Path, int8: bool, warn: Callable[[str], None] | None = None) -> None:
        self._build, self._fallback, self._device = build, fallback, device
        self._warn = warn or (lambda message: log.warning("%s", message))
        self._batch_size, self._record, self.int8 = batch_size, record, int8
        self._seconds: dict[str, list[float]] = {name: [] for name in candidates}
        self._live: dict[str, tuple[InferenceBackend, Forward]] = {}
        self._winner: InferenceBackend | None = None
        self._winner_forward: Forward | None = None
        self._failures: list[str] = []
        reference = next((name for name in candidates if self._start(name)), None)
        if reference is None:
            raise InputError("int8: no installed runtime could run the quantised graph ("
                             + "; ".join(self._failures) + "); turn int8 off")
        self._reference = reference
        challengers = list(candidates[candidates.index(reference) + 1:])
        # the reference warms up on the first full batch; each challenger then warms up once and
        # alternates with the reference
        self._steps: list[tuple[str, bool]] = [(reference, False)]
        for name in challengers:
            self._steps += [(name, False)] + [(who, True) for _ in range(TIMED_TURNS) for who in (name, reference)]
        self._position = 0
        if not challengers:  # the candidates before the reference failed to load: nothing left to compare
            backend = self._live[reference][0]
            self._winner = dataclasses.replace(backend, reason=f"auto: {reference}" + "".join(
                f"; {failure}" for failure in self._failures) + self._built_note(backend))
            self._winner_forward = engine_forward(self._winner, self._device)

    # --- what the engine reads --------------------------------------------------------------------

    @property
    def measuring(self) -> bool:
        return self._winner is None

    @property
    def name(self) -> str:
        return self._winner.name if self._winner is not None else "auto"

    @property
    def precision(self) -> str:
        return (self._winner or self._live[self._reference][0]).precision

    @property
    def model_path(self) -> Path | None:
        return self._winner.model_path if self._winner is not None else None

    @property
    def reason(self) -> str:
        if self._winner is not None:
            return self._winner.reason
        done = sum(1 for _, timed in self._steps[: self._position] if timed)
        total = sum(1 for _, timed in self._steps if timed)
        return (f"auto: measuring {', '.join(self._seconds)} on this run's batches in turns "
                f"({done} of {total} timed batches so far)")

    def describe(self) -> str:
        if self._winner is None:
            return f"{', '.join(self._seconds)} in turns ({self.reason})"
        return self._winner.describe()

    def __call__(self, x1: Any, x2: Any) -> dict[str, torch.Tensor]:
        if self._winner_forward is not None:
            return self._winner_forward(x1, x2)
        if int(x1.shape[0]) != self._batch_size:  # a short batch times differently: not part of the race
            return self._live[self._reference][1](x1, x2)
        name, timed = self._steps[self._position]
        while name not in self._live and not self._start(name):
            self._skip(name)
            if self._winner_forward is not None:
                return self._winner_forward(x1, x2)
            name, timed = self._steps[self._position]
        try:
            outputs, seconds = self._time(name, x1, x2)
        except Exception as error:  # a runtime that fails on real data must not end the analyst's run
            if name == self._reference:
                raise
            if isinstance(error, InputError):  # a graph that failed its proof: the user should know
                self._warn(f"{error}; {name} is left out of the race")
                self._failures.append(f"{name} failed on a batch ({error})")
            else:
                log.warning("%s failed on this run's batch (%s); it is left out of the race", name, error)
                self._failures.append(f"{name} failed on a batch ({type(error).__name__})")
            self._seconds[name] = [math.inf]
            self._release(name)
            self._skip(name)
            return self(x1, x2)
        if timed:
            self._seconds[name].append(seconds)
        self._position += 1
        if self._position == len(self._steps):
            self._decide()  # frees every session but the winner's, so a winning last challenger is kept
        elif name != self._reference and all(step != name for step, _ in self._steps[self._position:]):
            self._release(name)
        return outputs

    # --- the race ----------------------------------------------------------------------------------

    def _time(self, name: str, x1: Any, x2: Any) -> tuple[dict[str, torch.Tensor], float]:
        forward = self._live[name][1]
        started = time.perf_counter()
        outputs = forward(x1, x2)
        return outputs, time.perf_counter() - started

    def _start(self, name: str) -> bool:
        """Build ``name`` for its turns; a runtime that cannot run here is logged and remembered as failed."""
        try:
            backend = self._build(name)
        except InputError as error:
            if isinstance(error, BackendCacheError):
                self._warn(f"{error}; {name} is left out of the race")
            else:
                log.warning("%s", error)
            self._failures.append(f"{name} could not be used ({error})")
            self._seconds[name] = [math.inf]
            return False
        self._live[name] = (backend, engine_forward(backend, self._device))
        return True

    def _skip(self, name: str) -> None:
        """Drop the remaining turns of a challenger that could not be built or failed on a batch."""
        self._steps = self._steps[: self._position] + [step for step in self._steps[self._position:]
                                                       if step[0] != name]
        if self._position == len(self._steps):
            self._decide()

    def _release(self, name: str) -> None:
        """Free a challenger's session once its turns are over: one runtime session at a time."""
        self._live.pop(name, None)
        release_freed_memory()  # before the next challenger's session allocates its own

    def _decide(self) -> None:
        seconds = {name: min(values) if values else math.inf for name, values in self._seconds.items()}
        runtimes = {name: value for name, value in seconds.items() if name != "torch"}
        best = min(runtimes, key=runtimes.__getitem__) if runtimes else "torch"
        if "torch" in seconds and not runtimes.get(best, math.inf) < measure.RUNTIME_MARGIN * seconds["torch"]:
            best = "torch"
        measure.remember(self._record, best, seconds)
        reason = (f"auto: {best}, measured fastest on this run's batches "
                  f"({measure.describe(seconds, self._batch_size)})"
                  + "".join(f"; {failure}" for failure in self._failures))
        if best in self._live:
            winner = dataclasses.replace(self._live[best][0], reason=reason + self._built_note(self._live[best][0]))
        else:
            winner = self._fallback([best, *(name for name in seconds if name != best)], reason)
        for name in [name for name in self._live if name != best]:
            self._release(name)
        self._winner = winner
        self._winner_forward = engine_forward(winner, self._device)
        log.info("backend: %s", winner.describe())

    @staticmethod
    def _built_note(backend: InferenceBackend) -> str:
        """What the candidate's own reason said about its runtime and export (``; onnxruntime 1.32 (cached)``)."""
        _, _, note = backend.reason.partition("; ")
        return f"; {note}" if note else ""
