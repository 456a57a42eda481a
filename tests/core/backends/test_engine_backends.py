"""The engine's backend option: the same products from every runtime, and the choice in the log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import LocalConvModel, make_card, read_band

from core.backends import select as backend_select
from core.engine import OutputPaths, Progress, RunOptions, run_change_detection
from core.errors import InputError


class _Log(Progress):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)


def _run(scene_pair, folder: Path, **options: object) -> tuple[np.ndarray, np.ndarray, object, list[str]]:
    t1, t2, _ = scene_pair
    folder.mkdir()
    log = _Log()
    summary = run_change_detection(
        t1, t2, (LocalConvModel().eval(), make_card("binary")),
        OutputPaths(change_prob=folder / "prob.tif", change_mask=folder / "mask.tif"),
        RunOptions(**{"tile_size": 64, "overlap": 16, "batch_size": 3, **options},
                   backend_cache_dir=folder.parent / "cache"),
        log)
    return read_band(folder / "prob.tif"), read_band(folder / "mask.tif"), summary, log.lines


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_runtime_backend_writes_the_products_pytorch_writes(tmp_path: Path, scene_pair, runtime: str) -> None:
    if not backend_select.runtime_available(runtime):
        pytest.skip(f"{runtime} is not installed")
    prob_torch, mask_torch, _, _ = _run(scene_pair, tmp_path / "torch", backend="torch", precision="fp32")
    prob, mask, summary, lines = _run(scene_pair, tmp_path / runtime, backend=runtime, precision="fp32")
    assert summary.backend.startswith(f"{runtime} fp32 (requested")
    assert any(line.startswith(f"backend: {runtime}") for line in lines)
    np.testing.assert_allclose(prob, prob_torch, atol=1e-4)
    assert (mask == mask_torch).mean() > 0.999


def test_openvino_follows_the_runs_bf16_and_onnx_runtime_stays_fp32(tmp_path: Path, scene_pair) -> None:
    for runtime, arithmetic in (("openvino", "bf16"), ("onnxruntime", "fp32")):
        if not backend_select.runtime_available(runtime):
            continue
        _, mask_fp32, _, _ = _run(scene_pair, tmp_path / f"{runtime}-fp32", backend=runtime, precision="fp32")
        _, mask, summary, _ = _run(scene_pair, tmp_path / f"{runtime}-bf16", backend=runtime, precision="bf16")
        assert summary.backend.startswith(f"{runtime} {arithmetic} (requested")
        assert summary.precision.startswith(f"{arithmetic} ({runtime}")
        assert (mask == mask_fp32).mean() > 0.99


def test_auto_on_a_tiny_scene_stays_on_torch_and_says_why(tmp_path: Path, scene_pair) -> None:
    _, _, summary, lines = _run(scene_pair, tmp_path / "auto")
    assert summary.backend.startswith("torch ") and "(auto: torch until a run of 24 batches" in summary.backend
    assert any(line.startswith("backend: torch ") and "(auto:" in line for line in lines)


@pytest.mark.skipif(not any(backend_select.runtime_available(name) for name in backend_select.AUTO_ORDER),
                    reason="no CPU runtime installed")
def test_short_runs_give_the_same_products_whether_or_not_an_export_is_cached(tmp_path: Path, scene_pair) -> None:
    # Too short to measure, a run stays on PyTorch at the run's precision even once an export is
    # cached, so an analyst rerunning the same small scene gets the same map.
    prob_first, mask_first, first, _ = _run(scene_pair, tmp_path / "first")
    assert first.backend.startswith("torch")
    runtime = next(name for name in backend_select.AUTO_ORDER if backend_select.runtime_available(name))
    _run(scene_pair, tmp_path / "export", backend=runtime)
    prob_again, mask_again, again, _ = _run(scene_pair, tmp_path / "again")
    assert again.backend == first.backend.replace("exported now", "cached export")
    np.testing.assert_array_equal(prob_again, prob_first)
    np.testing.assert_array_equal(mask_again, mask_first)


@pytest.mark.skipif(not any(backend_select.runtime_available(name) for name in backend_select.AUTO_ORDER),
                    reason="no CPU runtime installed")
def test_a_long_auto_run_races_the_backends_on_its_own_batches_and_the_next_run_reads_the_result(
        tmp_path: Path, scene_pair) -> None:
    long_run = {"precision": "fp32", "batch_size": 1, "overlap": 32}  # 24 tiles of 64 px: 24 batches
    prob_torch, mask_torch, _, _ = _run(scene_pair, tmp_path / "torch", backend="torch", **long_run)
    prob, mask, first, lines = _run(scene_pair, tmp_path / "first", **long_run)
    assert first.tiles_run == 24
    assert "measured fastest on this run's batches (" in first.backend and "per batch of 1)" in first.backend
    # the log says a race starts, and later which backend won it
    assert any(line.startswith("backend: torch, ") and "in turns" in line for line in lines)
    assert lines.count(next(line for line in lines if "measured fastest" in line)) == 1
    # every candidate computed fp32: the map is PyTorch's, whichever took which batch
    np.testing.assert_allclose(prob, prob_torch, atol=1e-4)
    assert (mask == mask_torch).mean() > 0.999
    prob_again, _, again, _ = _run(scene_pair, tmp_path / "again", **long_run)
    winner = first.backend.split(" ")[0]
    assert again.backend.startswith(f"{winner} fp32 (auto: {winner}, measured fastest here earlier (")
    np.testing.assert_allclose(prob_again, prob_torch, atol=1e-4)


def test_summary_breaks_the_time_down_by_step(tmp_path: Path, scene_pair) -> None:
    _, _, summary, _ = _run(scene_pair, tmp_path / "steps", backend="torch")
    steps = ("read", "prepare", "network", "blend", "decode", "write", "finish")
    assert set(summary.timings) == set(steps)
    assert all(seconds > 0 for seconds in summary.timings.values())
    assert summary.timings["network"] == pytest.approx(summary.model_seconds)
    assert sum(summary.timings.values()) <= summary.elapsed_seconds


def test_unknown_backend_is_refused_before_anything_is_written(tmp_path: Path, scene_pair) -> None:
    with pytest.raises(InputError, match="unknown backend 'tpu'"):
        _run(scene_pair, tmp_path / "bad", backend="tpu")
    assert not list((tmp_path / "bad").iterdir())


def test_int8_run_is_calibrated_on_the_scene(tmp_path: Path, scene_pair) -> None:
    if not backend_select.runtime_available("onnxruntime"):
        pytest.skip("onnxruntime is not installed")
    _, mask_torch, _, _ = _run(scene_pair, tmp_path / "torch", backend="torch", precision="fp32")
    _, mask, summary, _ = _run(scene_pair, tmp_path / "int8", backend="onnxruntime", int8=True)
    assert "int8" in summary.backend
    assert list((tmp_path / "cache" / "onnx").glob("*-int8-*.onnx"))
    assert (mask == mask_torch).mean() > 0.9
