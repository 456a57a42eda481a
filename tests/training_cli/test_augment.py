"""The trainer's seeded flips and rotations keep every plane of an item aligned."""

from __future__ import annotations

import torch

from training_cli.augment import random_transform


def test_every_dihedral_transform_keeps_images_labels_and_valid_mask_aligned() -> None:
    height = width = 8
    # every plane holds the same pixel index pattern, so aligned planes stay equal after any transform
    index = torch.arange(height * width, dtype=torch.float32).reshape(height, width)
    item = {"t1": index.expand(3, -1, -1).clone(), "t2": index.expand(3, -1, -1).clone(),
            "change": index[None].clone(), "valid": index[None].clone(), "sem_t1": index.long(),
            "sem_t2": index.long(), "name": "pair"}
    seen = set()
    for seed in range(64):
        out = random_transform(item, torch.Generator().manual_seed(seed), "dihedral")
        reference = out["change"][0]
        seen.add(tuple(reference.flatten()[:2].tolist()))
        for key in ("t1", "t2", "valid"):
            assert torch.equal(out[key][0], reference), key
        for key in ("sem_t1", "sem_t2"):
            assert torch.equal(out[key].float(), reference), key
        assert out["name"] == "pair"
    assert len(seen) == 8  # all eight symmetries of the square occur
