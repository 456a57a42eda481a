"""Through the CLI, every network learns: its validation score after a short run is clearly above the
score of the same network untrained.

The smallest setting that showed it on two CPU cores: two synthetic 64 px pairs with about a third of
their pixels changed, one batch of both per step, validated on the same pairs (the test checks that loss,
gradient step, optimiser and decoding work together, not how well a network generalises), Adam at 1e-3
without schedule for the first stage, fixed seeds. (Narrower GAPL-SCD heads, 16 channels, stayed at
"everything changed" for eight epochs, so only its SQMLFI width is reduced.)
Shorter runs or fewer changed pixels left the binary networks at "nothing changed" for most epochs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from training_pairs import write_folder

from core.models import registry
from core.models.card import ModelCard
from training_cli.cli import main
from training_cli.datasets import open_dataset
from training_cli.trainer import LAST, read_training_state, validate

LR = "0.001"
#: Binary recipes compute the statistics on the training split; on two tiny images those made CLDRNet stay
#: at its starting score for 26 epochs, so the binary cases give the recipe fixed values.
FIXED_NORMALISATION = tuple(f"data.{key}=[{value}, {value}, {value}]" for key, value in
                            (("mean_t1", 127.5), ("std_t1", 64.0), ("mean_t2", 127.5), ("std_t2", 64.0)))
#: model -> (epochs, learning rate, extra --set values, margin the best validation score must clear).
#: LSAFNet is the slowest starter: at 1e-3 it first falls to "everything changed" (mIoU 0.16) and needs
#: more than 16 epochs to climb back; at 1e-4 it rises from its first epochs (0.338 -> 0.406 in 12).
#: CLDRNet at 1e-3 reached F1 0.423 from 0.299 (short of the margin) once its attention computed the same
#: products in another order: runs this small follow rounding. At 2e-3 it reaches 0.528.
SETTINGS: dict[str, tuple[int, str, tuple[str, ...], float]] = {
    "gapl_scd": (6, LR, ("options.sqmlfi_channels=32",), 0.1),
    "lsafnet": (12, "0.0001", (), 0.05),
    "sscfnet": (12, LR, FIXED_NORMALISATION, 0.1),
    "cldrnet": (20, "0.002", ("stages.2.epochs=6", *FIXED_NORMALISATION), 0.15),
}


@pytest.mark.parametrize("model", list(SETTINGS))
def test_network_learns_through_the_cli(model: str, tmp_path: Path) -> None:
    epochs, lr, options, margin = SETTINGS[model]
    crop = 64
    semantic = registry.get_spec(model).task == "semantic"
    data_format = "second" if semantic else "binary"
    root = write_folder(tmp_path / "data", semantic=semantic, train=2, val=2, size=crop, changes=20, val_offset=0)
    sets = [item for value in ('stages.1.optimizer="adam"', 'stages.1.schedule="constant"', "stages.1.warmup_epochs=0",
                               "stages.1.weight_decay=0", "train.precision=\"fp32\"", *options)
            for item in ("--set", value)]
    code = main(["train", "--model", model, "--data", str(root), "--format", data_format, "--out",
                 str(tmp_path / "run"), "--epochs", str(epochs), "--batch-size", "2", "--crop", str(crop),
                 "--lr", lr, "--workers", "0", "--pretrained", "none", "--no-progress", *sets])
    assert code == 0
    state = read_training_state(tmp_path / "run" / LAST)
    card = ModelCard.from_dict(json.loads(state["card"]))
    metric = state["recipe"]["train"]["select"]
    best = json.loads(state["progress"]["best_metrics"])[metric]

    torch.manual_seed(state["recipe"]["train"]["seed"])  # the trainer's initial network
    untrained = registry.build_model(model, **{**card.options, "pretrained": None})
    val = open_dataset(root, data_format, "val", mean=card.mean_t1, std=card.std_t1, mean_t2=card.mean_t2,
                       std_t2=card.std_t2)
    before = validate(untrained, val, task=card.task, num_classes=card.num_classes, device=torch.device("cpu"),
                      dtype=None, batch_size=4)[metric]
    assert best > before + margin, f"{model}: {metric} {before:.3f} untrained, best {best:.3f} trained"
    assert dataclasses.asdict(card)["training"]["best_epoch"] >= 1
