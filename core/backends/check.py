"""int8 proves itself on the scene before a run uses it.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..files import atomic_write_text
from .backend import Forward
from .cache import recorded_sha256

log = logging.getLogger(__name__)

#: Share of the check tiles' labels int8 must keep (the speed issue's bar for int8 by default).
INT8_MIN_AGREEMENT = 0.995

#: Tiles labelled by both graphs: at 512 px that is about 2 Mpx, enough to resolve 0.1 % of labels.
CHECK_TILES = 8

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
