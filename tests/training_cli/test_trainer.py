"""The trainer through its contract: exact resume, stages, the rotated gradient step, export, DDP metrics."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch
from torch import nn
from torch.utils.data import Dataset
from training_pairs import MEAN, STD, MemoryPairs, write_folder

from core.errors import InputError
from core.models import registry
from core.models.base import plain_backward
from core.models.card import LANDSAT_SCD_CLASSES, ModelCard, TrainingResize
from core.models.checkpoint import load_checkpoint, make_card, read_card
from core.models.gapl_scd.losses import rotated_backward
from training_cli.cli import main
from training_cli.commands.train import open_training_data
from training_cli.datasets import open_dataset
from training_cli.recipes import apply_overrides, format_recipe, load_recipe
from training_cli.trainer import EXIT_INTERRUPTED, LAST, Trainer, TrainingData, read_training_state, validate

FAST = {"batch_size": 2, "crop": 64, "workers": 0, "pretrained": "none"}


def _data(model: str, train: int = 4, val: int = 2) -> TrainingData:
    semantic = registry.get_spec(model).task == "semantic"
    card = make_card(model, "second" if semantic else "binary", tile_size=64)
    card = dataclasses.replace(card, mean_t1=(MEAN,) * 3, std_t1=(STD,) * 3, mean_t2=(MEAN,) * 3, std_t2=(STD,) * 3)
    return TrainingData(MemoryPairs(train, semantic=semantic), MemoryPairs(val, seed=1, semantic=semantic), card)


def _recipe(model: str, epochs: int = 1, **changes: object) -> dict:
    return apply_overrides(load_recipe(model, None), {**FAST, "epochs": epochs, **changes}, [])


def test_an_interrupted_cpu_run_resumed_ends_with_bitwise_the_same_weights(tmp_path: Path) -> None:
    """CLDRNet, one epoch per stage: Ctrl-C inside stage 1, resume, and the stage change happens after it."""
    recipe = _recipe("cldrnet")
    whole = Trainer(recipe, _data("cldrnet"), tmp_path / "whole", device="cpu", progress=False).run()
    assert whole.exit_code == 0

    def interrupt(step: int, model: nn.Module) -> None:
        if step == 1:
            signal.raise_signal(signal.SIGINT)

    stopped = Trainer(recipe, _data("cldrnet"), tmp_path / "cut", device="cpu", progress=False,
                      on_step=interrupt).run()
    assert stopped.exit_code == EXIT_INTERRUPTED
    assert read_training_state(tmp_path / "cut" / LAST)["progress"]["step_in_epoch"] == 1
    resumed = Trainer(recipe, _data("cldrnet"), tmp_path / "cut", device="cpu", progress=False, resume=True).run()
    assert resumed.exit_code == 0

    a = read_training_state(tmp_path / "whole" / LAST)
    b = read_training_state(tmp_path / "cut" / LAST)
    assert a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["progress"]["global_step"] == b["progress"]["global_step"] == 4
    assert [r["val_f1"] for r in whole.history] == [r["val_f1"] for r in resumed.history]


class _HalfUnlabelled(Dataset):
    """Pairs whose right half carries no label (``valid`` 0) and holds the change labels of ``garbage`` there."""

    def __init__(self, pairs: Dataset, garbage: int) -> None:
        self.pairs = pairs
        self.garbage = garbage

    def __len__(self) -> int:
        return len(self.pairs)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict:
        item = dict(self.pairs[index])
        valid = torch.ones_like(item["change"])
        valid[..., valid.shape[-1] // 2:] = 0
        noise = torch.rand(valid.shape, generator=torch.Generator().manual_seed(100 * self.garbage + index)) > 0.5
        item["change"] = torch.where(valid > 0, item["change"], noise.float())
        item["valid"] = valid
        return item


def test_unlabelled_pixels_change_neither_the_weights_nor_the_validation_scores(tmp_path: Path) -> None:
    """Two runs on data that differ only in the garbage their unlabelled halves hold end with bitwise the
    same weights, losses and validation metrics: the trainer hands ``valid`` to the loss, and validation
    leaves those pixels out of the confusion matrix."""
    runs = []
    for garbage in (1, 2):
        base = _data("sscfnet", train=2, val=2)
        data = dataclasses.replace(base, train=_HalfUnlabelled(base.train, garbage),
                                   val=_HalfUnlabelled(base.val, garbage))
        result = Trainer(_recipe("sscfnet"), data, tmp_path / f"run{garbage}", device="cpu", progress=False).run()
        assert result.exit_code == 0
        logged = {k: v for k, v in result.history[0].items() if k.startswith(("val_", "train_loss"))}
        runs.append((read_training_state(tmp_path / f"run{garbage}" / LAST)["model"], logged))
    (weights_1, logged_1), (weights_2, logged_2) = runs
    assert "val_f1" in logged_1 and "train_loss" in logged_1
    assert logged_1 == logged_2
    for key, value in weights_1.items():
        assert torch.equal(value, weights_2[key]), key


def test_cldrnet_stage_two_trains_only_dmg_and_dmr_with_the_rest_frozen_in_eval_mode(tmp_path: Path) -> None:
    seen: list[dict[str, object]] = []

    def snapshot(step: int, model: nn.Module) -> None:
        seen.append({"encoder": model.encoder.layer1[0].conv1.weight.detach().clone(),
                     "bn": model.encoder.stem[1].running_mean.clone(),
                     "dmr": next(model.dmr.parameters()).detach().clone(),
                     "dmg": next(model.dmg.parameters()).detach().clone(),
                     "encoder_training": model.encoder.training, "dmr_training": model.dmr.training})

    Trainer(_recipe("cldrnet"), _data("cldrnet"), tmp_path, device="cpu", progress=False, on_step=snapshot).run()
    stage1, stage2 = seen[:2], seen[2:]
    assert torch.equal(stage1[0]["dmr"], stage1[1]["dmr"]) and not stage1[0]["dmr_training"]
    assert not torch.equal(stage1[0]["encoder"], stage1[1]["encoder"])
    assert torch.equal(stage2[0]["encoder"], stage2[1]["encoder"]) and torch.equal(stage2[0]["bn"], stage2[1]["bn"])
    assert not stage2[0]["encoder_training"]
    assert not torch.equal(stage2[0]["dmr"], stage2[1]["dmr"])
    assert not torch.equal(stage2[0]["dmg"], stage2[1]["dmg"])


class _TwoTasks(nn.Module):
    """A shared 2-vector ``encoder`` and a head: losses whose gradients are known by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(2, 1, bias=False)
        self.head = nn.Parameter(torch.zeros(()))
        with torch.no_grad():
            self.encoder.weight.zero_()

    def terms(self) -> dict[str, torch.Tensor]:
        w = self.encoder.weight[0]
        merge = w @ torch.tensor([1.0, 0.0]) + self.head
        cpa = w @ torch.tensor([-1.0, 1.0]) + 2 * self.head
        return {"loss_merge": merge, "loss_cpa": cpa, "loss": merge + cpa}


def test_gapl_gradient_step_rotates_conflicting_encoder_gradients_as_eq_19_to_21() -> None:
    model = _TwoTasks()
    rotated_backward(model, model.terms(), lambda x: x, lambda tensors: None)
    # g_a = (1, 0), g_b = (-1, 1), g_a . g_b = -1 < 0:
    # g_a' = g_a - (-1 / 2) g_b = (0.5, 0.5);  g_b' = g_b - (-1 / 1) g_a = (0, 1);  sum (0.5, 1.5)
    assert torch.allclose(model.encoder.weight.grad[0], torch.tensor([0.5, 1.5]))
    assert model.head.grad.item() == pytest.approx(3.0)  # not shared: the plain sum
    plain = _TwoTasks()
    plain_backward(plain, plain.terms(), lambda x: x, lambda tensors: None)
    assert torch.allclose(plain.encoder.weight.grad[0], torch.tensor([0.0, 1.0]))


def test_gapl_uncertainty_weights_are_trained_by_the_optimiser(tmp_path: Path) -> None:
    result = Trainer(_recipe("gapl_scd"), _data("gapl_scd"), tmp_path, device="cpu", progress=False).run()
    state = read_training_state(tmp_path / LAST)
    assert result.exit_code == 0
    assert state["model"]["log_var_ss"].item() != 0.0 and state["model"]["log_var_cd"].item() != 0.0
    groups = [g["name"] for g in state["optimizer"]["param_groups"]]
    assert groups == ["network", "uncertainty"]


def test_export_writes_a_self_describing_model_file_and_half_loads_on_cpu(tmp_path: Path) -> None:
    Trainer(_recipe("gapl_scd"), _data("gapl_scd"), tmp_path / "run", device="cpu", progress=False).run()
    full, half = tmp_path / "model.pt", tmp_path / "model-fp16.pt"
    assert main(["export", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--out", str(full)]) == 0
    assert main(["export", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--out", str(half), "--half"]) == 0
    card = read_card(full)
    assert card.model == "gapl_scd" and card.tile_size == 64 and card.mean_t1 == (MEAN,) * 3
    assert set(card.metrics) >= {"miou", "sek", "oa"} and card.training["best_epoch"] == 1
    assert card.training["recipe"]["stages"][0]["optimizer"] == "adam"
    assert card.training["backbone_start"] == "random initialisation"
    assert half.stat().st_size < 0.6 * full.stat().st_size
    model_full, _ = load_checkpoint(full)
    model_half, _ = load_checkpoint(half)
    x1, x2 = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = model_full(x1, x2), model_half(x1, x2)
    assert next(model_half.parameters()).dtype == torch.float32
    assert torch.allclose(a["change_prob"], b["change_prob"], atol=2e-2)
    assert main(["export", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--out", str(full)]) == 2
    if importlib.util.find_spec("onnxruntime") is not None:  # an optional runtime
        import onnxruntime

        beside = tmp_path / "model-onnx.pt"
        assert main(["export", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--out", str(beside),
                     "--format", "onnx"]) == 0
        session = onnxruntime.InferenceSession(str(tmp_path / "model-onnx.64px.onnx"),
                                               providers=["CPUExecutionProvider"])
        (prob,) = session.run(["change_prob"], {"x1": x1.numpy(), "x2": x2.numpy()})
        np.testing.assert_allclose(prob, a["change_prob"].numpy(), atol=1e-4)
        before = (tmp_path / "model-onnx.64px.onnx").read_bytes()
        beside.unlink()  # the ONNX file left over from an earlier export is not replaced without --force
        assert main(["export", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--out", str(beside),
                     "--format", "onnx"]) == 2
        assert (tmp_path / "model-onnx.64px.onnx").read_bytes() == before and not beside.exists()


def _landsat_folder(root: Path, pairs: list[tuple[str, int]]) -> Path:
    """Landsat-SCD pairs (``A B labelA_rgb labelB_rgb``), one per ``(split, size in px)``, named 0.png, 1.png ..."""
    from PIL import Image

    palette = np.asarray([(255, 255, 255), *(c.color for c in LANDSAT_SCD_CLASSES)], np.uint8)
    rng = np.random.default_rng(0)
    for index, (split, size) in enumerate(pairs):
        changed = rng.random((size, size)) < 0.5
        planes = {"A": rng.integers(0, 250, (size, size, 3)), "B": rng.integers(0, 250, (size, size, 3)),
                  "labelA_rgb": palette[np.where(changed, rng.integers(1, 5, (size, size)), 0)],
                  "labelB_rgb": palette[np.where(changed, rng.integers(1, 5, (size, size)), 0)]}
        for folder, array in planes.items():
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(array, np.uint8)).save(root / split / folder / f"{index}.png")
    return root


def test_a_resized_landsat_run_records_the_resize_in_the_exported_model_card(tmp_path: Path) -> None:
    """``data.resize`` (Landsat-SCD's 416 px tiles to 512, here 48 to 64) ends up in best.pt's card and the
    exported file's, so the plugin can tell an analyst the network learned from enlarged imagery."""
    root = _landsat_folder(tmp_path / "landsat", [("train", 48), ("train", 48), ("val", 48)])
    run = tmp_path / "run"
    assert main(["train", "--model", "lsafnet", "--data", str(root), "--format", "landsat-scd", "--out", str(run),
                 "--epochs", "1", "--batch-size", "2", "--crop", "64", "--workers", "0", "--pretrained", "none",
                 "--no-progress", "--set", "data.resize=64", "--set", "options.decoder_channels=16"]) == 0
    assert read_card(run / "best.pt").training_resize == TrainingResize(source_height=48, source_width=48, size=64)
    assert main(["export", "--checkpoint", str(run / "best.pt"), "--out", str(tmp_path / "model.pt")]) == 0
    card = read_card(tmp_path / "model.pt")
    assert card.training_resize == TrainingResize(48, 48, 64) and card.tile_size == 64
    assert card.training["recipe"]["data"]["resize"] == 64


def test_resize_of_pairs_of_different_sizes_and_bad_resize_values_are_refused(tmp_path: Path) -> None:
    root = _landsat_folder(tmp_path / "landsat", [("train", 48), ("train", 40), ("val", 48)])
    recipe = _recipe("lsafnet")
    recipe["data"]["resize"] = 64
    with pytest.raises(InputError, match=r"different sizes \(.*0\.png is 48 x 48 px, .*1\.png is 40 x 40 px\)"):
        open_training_data(recipe, root, "landsat-scd")
    recipe["data"]["resize"] = 48  # the pairs' own size: nothing resized, nothing recorded
    assert open_training_data(recipe, _landsat_folder(tmp_path / "same", [("train", 48), ("val", 48)]),
                              "landsat-scd").card.training_resize is None
    for bad in ("0", "-3", "51.5", '"big"'):
        with pytest.raises(InputError, match=r"data\.resize must be a positive whole number"):
            apply_overrides(load_recipe("lsafnet", None), {}, [f"data.resize={bad}"])


def test_offline_imagenet_start_warns_falls_back_to_random_and_is_recorded(monkeypatch, tmp_path: Path) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    recipe = _recipe("gapl_scd", epochs=0, pretrained="imagenet")
    with pytest.warns(RuntimeWarning, match="ImageNet"):
        trainer = Trainer(recipe, _data("gapl_scd"), tmp_path, device="cpu", progress=False)
        trainer.run()
    assert trainer.backbone_start.startswith("random initialisation (ImageNet weights unavailable")


def test_recipes_merge_flags_and_set_and_print_back(capsys) -> None:
    recipe = apply_overrides(load_recipe("cldrnet", None), {"epochs": 3, "lr": 0.02},
                             ["stages.2.schedule=\"cosine\"", "train.crop=128", "options.clusters=4"])
    assert [s["epochs"] for s in recipe["stages"]] == [3, 3]
    assert [s["lr"] for s in recipe["stages"]] == pytest.approx([0.02, 0.002])
    assert recipe["stages"][1]["schedule"] == "cosine" and recipe["train"]["crop"] == 128
    assert recipe["options"]["clusters"] == 4
    assert main(["train", "--model", "lsafnet", "--print-config", "--batch-size", "4"]) == 0
    printed = capsys.readouterr().out
    assert "batch_size = 4" in printed and 'optimizer = "sgd"' in printed and "nesterov = true" in printed
    assert tomllib.loads(format_recipe(recipe))["stages"][1]["lr"] == pytest.approx(0.002)
    assert main(["train", "--model", "lsafnet", "--print-config", "--set", "train.crop=100"]) == 2
    assert main(["train", "--model", "cldrnet", "--print-config", "--set", "stages.3.lr=1"]) == 2
    assert "multiple of 32" in capsys.readouterr().err


def test_distributed_validation_sums_to_the_single_process_confusion(tmp_path: Path) -> None:
    """Two gloo processes through torchrun train one epoch; their summed metrics equal one process's."""
    root = write_folder(tmp_path / "data", semantic=False, train=4, val=3)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
               "-m", "training_cli", "train", "--model", "sscfnet", "--data", str(root), "--format", "binary",
               "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "1", "--crop", "64",
               "--workers", "0", "--pretrained", "none", "--no-progress", "--set", "train.precision=\"fp32\""]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    state = read_training_state(tmp_path / "run" / LAST)
    logged = {k[4:]: v for k, v in json.loads(state["history"])[0].items() if k.startswith("val_")}
    model = registry.build_model("sscfnet")
    model.load_state_dict(state["model"])
    card = ModelCard.from_dict(json.loads(state["card"]))
    val = open_dataset(root, "binary", "val", mean=card.mean_t1, std=card.std_t1, mean_t2=card.mean_t2,
                       std_t2=card.std_t2)
    alone = validate(model, val, task="binary", num_classes=0, device=torch.device("cpu"), dtype=None,
                     batch_size=1)
    assert alone == pytest.approx(logged)
