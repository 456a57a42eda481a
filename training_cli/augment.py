"""Geometric augmentation applied identically to both dates and every label of a pair.

Random flips and 90-degree rotations (the eight symmetries of the square, "dihedral") are the
augmentation the papers that name one use. Each item's transform comes from a seed derived
from (run seed, epoch, item index) only, so an epoch sees the same augmented items whatever the
number of DataLoader workers or processes, and a resumed run repeats the interrupted one exactly.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

#: Item keys holding images or labels; all are transformed together. Images are ``[C, H, W]``
#: (``change`` is ``[1, H, W]``), semantic labels ``[H, W]``.
SPATIAL_KEYS = ("t1", "t2", "change", "sem_t1", "sem_t2")


def transform_item(item: Mapping[str, Any], rotations: int, flip: bool) -> dict[str, Any]:
    """``item`` rotated by ``rotations`` x 90 degrees and then, when ``flip``, mirrored left-right."""
    out = dict(item)
    for key in SPATIAL_KEYS:
        if key not in out:
            continue
        value = out[key]
        dims = (-2, -1)
        if rotations % 4:
            value = torch.rot90(value, rotations % 4, dims)
        if flip:
            value = torch.flip(value, (-1,))
        out[key] = value.contiguous()
    return out


def random_transform(item: Mapping[str, Any], generator: torch.Generator, mode: str) -> dict[str, Any]:
    """A random transform of ``mode``: ``"dihedral"`` (flips and rotations), ``"flips"`` (h/v) or ``"none"``."""
    if mode == "none":
        return dict(item)
    draw = int(torch.randint(0, 8 if mode == "dihedral" else 4, (1,), generator=generator))
    if mode == "flips":
        # no flip, left-right, up-down (= rotate 180 then left-right), both (= rotate 180)
        return transform_item(item, 2 * (draw >> 1), bool((draw & 1) ^ (draw >> 1)))
    return transform_item(item, draw % 4, draw >= 4)


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that depends only on the run seed, the epoch and the item."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0]) & ((1 << 63) - 1)


class SeededItems(Dataset):
    """A training dataset whose every item (random crop and augmentation) is seeded by run, epoch and index.

    The wrapped dataset's own randomness (a random crop, say) runs under seeded global random
    states that are restored afterwards, so the trainer's own random streams are not disturbed.
    Call :meth:`set_epoch` before each epoch.
    """

    def __init__(self, dataset: Dataset, *, seed: int, augment: str) -> None:
        self.dataset = dataset
        self.seed = seed
        self.augment = augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        seed = item_seed(self.seed, self.epoch, index)
        python_state, numpy_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                random.seed(seed)
                np.random.seed(seed % (1 << 32))
                item = self.dataset[index]
                generator = torch.Generator().manual_seed(seed)
                return random_transform(item, generator, self.augment)
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
