"""A runtime's graph proves it is the model's on every run, and int8 proves itself on the scene.

A graph from the backend cache is run as the model, but its hash matching its record
only proves the file is whole: whoever can write the cache folder can write both, and
a stale or misfiled graph would pass too (a GAPL-SCD model file once produced
LSAFNet's map this way, reported as a success). So :class:`ProvenGraph` compares the
first tile of every run's first batch with PyTorch running the model file's own
network, before any of its output is used; a graph whose outputs differ by more than
its arithmetic explains (:data:`PROOF_TOLERANCE`) is removed from the cache and the run
goes on with PyTorch (:class:`GraphMismatch`). A digest of the graph's weights against
the checkpoint's was not chosen: the exporter folds and renames tensors, and an int8
graph holds other numbers altogether, so no digest survives every runtime, and a digest
says nothing of the graph's operators. The comparison costs one PyTorch forward pass on
one tile per run, checks what is computed on the analyst's own data, and cannot be
prepared for, since the tile is not known in advance.

Quantisation moves a few labels; how many depends on the model and on the imagery,
so no table measured elsewhere can promise it for the analyst's scene. Before an
int8 run, the quantised graph and the fp32 network label the same check tiles of
the scene (a sample spread over it, apart from the calibration tiles), and int8 is
used only when they agree on at least :data:`INT8_MIN_AGREEMENT` of the valid
pixels' labels (the change decision, and both classes where a semantic network
sees change). Otherwise the run goes on without int8 and says why.

The result is stored beside the int8 file, whose cache key already names the
calibration sample, so a run over the same scene does not check again. It names the
int8 file it checked (by the SHA-256 the cache recorded for it): a file rebuilt since
is checked again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..files import atomic_write_text
from ..models.base import SEM_LOGITS_T1, SEM_LOGITS_T2
from .backend import Forward
from .cache import recorded_sha256

log = logging.getLogger(__name__)

#: Share of the check tiles' labels int8 must keep (the speed issue's bar for int8 by default).
INT8_MIN_AGREEMENT = 0.995

#: Tiles labelled by both graphs: at 512 px that is about 2 Mpx, enough to resolve 0.1 % of labels.
CHECK_TILES = 8

#: How far a graph's outputs may lie from PyTorch's (fp32) on the first tile of a run, by the graph's arithmetic:
#: the mean absolute difference of its probabilities (change probability, class probabilities, change
#: threshold), the largest over the outputs. Measured on the untrained networks at 64 px (the worst case: their
#: logits are ill-conditioned): fp32 runtimes differ by less than 1e-5, OpenVINO's bf16 by up to 0.004 and int8
#: by up to 0.013 (LSAFNet; 0.0013 for the others), while the same network with other weights differed by 0.023
#: (SSCFNet, CLDRNet) to 0.6 (LSAFNet), and trained networks differ far more. A graph within these bounds gives
#: the map its arithmetic gives, whoever wrote it.
PROOF_TOLERANCE = {"fp32": 1e-3, "bf16": 1e-2, "int8": 2e-2}

#: Tiles of the first batch compared with PyTorch (each costs one PyTorch forward pass of a tile).
PROOF_TILES = 1

#: ``(x1, x2, valid)`` per tile: prepared, padded to the network's size, with the valid-pixel mask.
CheckTiles = Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]

#: The labels of a batch's outputs, ``[B, H, W]`` integers (0: no change).
Labeller = Callable[[dict[str, torch.Tensor]], np.ndarray]


@dataclass(frozen=True)
class Int8Check:
    """How far int8 kept fp32's labels on one scene's check tiles."""

    agreement: float
    tiles: int
    pixels: int

    @property
    def passed(self) -> bool:
        return self.agreement >= INT8_MIN_AGREEMENT

    def describe(self) -> str:
        return (f"int8 kept {self.agreement * 100:.2f} % of fp32's labels on {self.tiles} check tiles of this scene "
                f"({self.pixels / 1e6:.2f} Mpx; at least {INT8_MIN_AGREEMENT * 100:.1f} % needed)")


def _digest(tiles: CheckTiles) -> str:
    digest = hashlib.sha256()
    for x1, x2, valid in tiles:
        for array in (x1, x2, valid):
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def record_path(int8_model: Path) -> Path:
    """Where the check of the int8 file ``int8_model`` is stored."""
    return int8_model.with_suffix(".check.json")


def check_int8(int8: Callable[[], Forward], fp32: Forward, labels: Labeller, tiles: CheckTiles, *, batch_size: int,
               record: Path | None = None, model: Path | None = None) -> Int8Check:
    """Label ``tiles`` with both graphs and return their agreement over the valid pixels.

    Args:
        int8: Gives the quantised graph's forward pass; not called when ``record`` holds the result.
        fp32: The fp32 reference (the network itself, no autocast).
        labels: Turns a batch's outputs into labels.
        tiles: The check tiles.
        batch_size: Tiles per forward pass (bounds the memory the check holds).
        record: Where the result for the int8 file is stored (:func:`record_path`); one stored for the
            same tiles and the same int8 file is returned as it is.
        model: The int8 file ``int8`` loads, whose cache record names the version checked.
    """
    digest = _digest(tiles)
    if record is not None and model is not None:
        try:
            stored = json.loads(record.read_text(encoding="utf-8"))
            checked = recorded_sha256(model)
            if stored.get("tiles_sha256") == digest and checked and stored.get("model_sha256") == checked:
                return Int8Check(float(stored["agreement"]), int(stored["tiles"]), int(stored["pixels"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # none yet, or unreadable: check again
    quantised = int8()
    same = pixels = 0
    for start in range(0, len(tiles), batch_size):
        batch = tiles[start:start + batch_size]
        x1, x2 = (torch.from_numpy(np.stack([tile[i] for tile in batch])) for i in (0, 1))
        valid = np.stack([tile[2] for tile in batch])
        with torch.inference_mode():
            expected = labels(fp32(x1, x2))
            got = labels(quantised(x1, x2))
        same += int((expected == got)[valid].sum())
        pixels += int(valid.sum())
    result = Int8Check(same / pixels if pixels else 0.0, len(tiles), pixels)
    checked = recorded_sha256(model) if model is not None else None  # again: int8() may have just built it
    if record is not None and checked:
        try:
            atomic_write_text(record, json.dumps({"tiles_sha256": digest, "model_sha256": checked,
                                                  "agreement": result.agreement, "tiles": result.tiles,
                                                  "pixels": result.pixels}))
        except OSError as error:  # a read-only cache only means checking again next time
            log.info("could not store the int8 check in %s (%s)", record, error)
    return result


# --- every graph proves it is the model's ------------------------------------------------------------

class GraphMismatch(InputError):  # noqa: N818 - reads as "raise GraphMismatch(...)"
    """A runtime's graph does not compute what the model file's network computes (it was removed from the cache)."""


def probability_difference(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> float:
    """The largest, over the outputs, mean absolute difference of their probabilities (inf: an output is missing).

    Class logits are compared as the engine reads them, as probabilities of the classes
    ``1..N``, so that a constant shift (which changes no label) does not count.
    """
    largest = 0.0
    for key, value in expected.items():
        if key not in got or tuple(got[key].shape) != tuple(value.shape):
            return math.inf
        a, b = value.detach().float(), torch.as_tensor(got[key]).detach().float()
        if key in (SEM_LOGITS_T1, SEM_LOGITS_T2):
            a, b = torch.softmax(a[:, 1:], dim=1), torch.softmax(b[:, 1:], dim=1)
        difference = float((a - b).abs().mean())
        largest = max(largest, difference if math.isfinite(difference) else math.inf)
    return largest


class ProvenGraph:
    """A runtime's forward pass that first proves, on the run's first tile, that it computes the model.

    Args:
        forward: The runtime's forward pass.
        reference: The model file's network (PyTorch, on the CPU, in eval mode).
        precision: The graph's arithmetic (``fp32``, ``bf16`` or ``int8``), which sets the tolerance.
        path: The graph's file, for the message.
        forget: Removes the graph from the cache (called once, on a mismatch).
    """

    def __init__(self, forward: Forward, reference: torch.nn.Module, *, precision: str, path: Path,
                 forget: Callable[[], None]) -> None:
        self.forward, self.reference = forward, reference
        self.precision, self.path, self.forget = precision, path, forget
        self.proven = False

    def __call__(self, x1: Any, x2: Any) -> dict[str, torch.Tensor]:
        outputs = self.forward(x1, x2)
        if not self.proven:
            self._prove(x1, x2, outputs)
        return outputs

    def _prove(self, x1: Any, x2: Any, outputs: dict[str, torch.Tensor]) -> None:
        count = PROOF_TILES
        a1, a2 = (torch.as_tensor(x)[:count].float() for x in (x1, x2))
        with torch.inference_mode():
            expected = self.reference(a1, a2)
        difference = probability_difference(expected, {k: torch.as_tensor(v)[:count] for k, v in outputs.items()})
        allowed = PROOF_TOLERANCE.get(self.precision, PROOF_TOLERANCE["fp32"])
        if difference <= allowed:
            self.proven = True
            return
        self.forget()
        raise GraphMismatch(
            f"the graph {self.path.name} in the backend cache does not compute what the model file's network computes "
            f"(its outputs differ from PyTorch's by {difference:.3g} on this run's first tile, at most {allowed:g} "
            f"is {self.precision} arithmetic): it was removed from the cache ({self.path.parent}) and is not used")
