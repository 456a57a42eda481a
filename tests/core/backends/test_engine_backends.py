"""The engine's backend option: the same products from every runtime, and the choice in the log."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import LocalConvModel, make_card, read_band

from core.backends import cache as backend_cache
from core.backends import check as backend_check
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


@pytest.fixture
def any_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test network is untrained, and int8 moves about 1 % of its labels: the check rightly
    refuses it. Tests of what an int8 run does let every int8 graph through."""
    monkeypatch.setattr(backend_check, "INT8_MIN_AGREEMENT", 0.0)


def test_int8_run_is_calibrated_on_the_scene(tmp_path: Path, scene_pair, any_int8: None) -> None:
    if not backend_select.runtime_available("onnxruntime"):
        pytest.skip("onnxruntime is not installed")
    _, mask_torch, _, _ = _run(scene_pair, tmp_path / "torch", backend="torch", precision="fp32")
    _, mask, summary, _ = _run(scene_pair, tmp_path / "int8", backend="onnxruntime", int8=True)
    assert "int8" in summary.backend
    assert list((tmp_path / "cache" / "onnx").glob("*-int8-*.onnx"))
    assert (mask == mask_torch).mean() > 0.9


needs_ort = pytest.mark.skipif(not backend_select.runtime_available("onnxruntime"),
                               reason="onnxruntime is not installed")


@needs_ort
def test_int8_is_checked_against_fp32_on_the_scene_and_the_check_is_kept(tmp_path: Path, scene_pair,
                                                                         any_int8: None) -> None:
    _, _, summary, lines = _run(scene_pair, tmp_path / "first", backend="onnxruntime", int8=True)
    assert "int8" in summary.backend
    assert summary.int8_check.startswith("int8 kept ") and "check tiles of this scene" in summary.int8_check
    assert summary.int8_check in lines
    records = list((tmp_path / "cache" / "onnx").glob("*-int8-*.check.json"))
    assert len(records) == 1
    # the same scene is not checked again: the stored result is what the next run reports
    record = json.loads(records[0].read_text())
    record["agreement"] = 0.99987
    records[0].write_text(json.dumps(record))
    _, _, again, _ = _run(scene_pair, tmp_path / "again", backend="onnxruntime", int8=True)
    assert "int8 kept 99.99 %" in again.int8_check
    # a result stored for another version of the int8 file (one rebuilt since) is not trusted: checked again
    int8_file = records[0].with_suffix("").with_suffix(".onnx")
    record = json.loads(records[0].read_text())
    record["model_sha256"] = "0" * 64
    records[0].write_text(json.dumps(record))
    _, _, rebuilt, _ = _run(scene_pair, tmp_path / "rebuilt", backend="onnxruntime", int8=True)
    assert "int8 kept 99.99 %" not in rebuilt.int8_check and rebuilt.int8_check.startswith("int8 kept ")
    assert json.loads(records[0].read_text())["model_sha256"] == backend_cache.recorded_sha256(int8_file)


@needs_ort
def test_int8_that_moves_too_many_labels_is_not_used(tmp_path: Path, scene_pair,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_check, "INT8_MIN_AGREEMENT", 1.01)  # no graph can keep more than every label
    prob_fp32, mask_fp32, _, _ = _run(scene_pair, tmp_path / "fp32", backend="onnxruntime")
    prob, mask, summary, lines = _run(scene_pair, tmp_path / "int8", backend="onnxruntime", int8=True)
    assert "int8" not in summary.backend and summary.int8_check.endswith("ran without int8")
    assert any("running without int8" in line for line in lines)
    np.testing.assert_array_equal(mask, mask_fp32)
    np.testing.assert_array_equal(prob, prob_fp32)


def test_check_counts_only_valid_pixels() -> None:
    tiles = [(np.zeros((1, 4, 4), np.float32), np.zeros((1, 4, 4), np.float32), np.eye(4, dtype=bool))]

    def labels(outputs: dict[str, torch.Tensor]) -> np.ndarray:
        return outputs["label"].numpy()

    def same(x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"label": torch.zeros(1, 4, 4, dtype=torch.int64)}

    def off_diagonal_differs(x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"label": 1 - torch.eye(4, dtype=torch.int64)[None]}

    def one_valid_pixel_differs(x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        label = torch.zeros(1, 4, 4, dtype=torch.int64)
        label[0, 0, 0] = 5
        return {"label": label}

    assert backend_check.check_int8(lambda: off_diagonal_differs, same, labels, tiles, batch_size=2).agreement == 1.0
    result = backend_check.check_int8(lambda: one_valid_pixel_differs, same, labels, tiles, batch_size=2)
    assert (result.agreement, result.pixels, result.passed) == (0.75, 4, False)


@needs_ort
@pytest.mark.parametrize(("change", "declined"), [
    ({}, None),
    ({"fast_int8": False}, "this CPU has no AVX-512 VNNI, AVX-VNNI or AMX"),
    ({"batches": 10_000}, "batches is too short to pay for quantising"),
    ({"precision": "fp32"}, "precision fp32 was asked for"),
    ({"backend": "torch"}, "backend torch computes in floating point"),
    ({"int8": False}, ""),
])
def test_int8_by_default_only_where_it_pays(tmp_path: Path, scene_pair, any_int8: None,
                                            monkeypatch: pytest.MonkeyPatch, change: dict,
                                            declined: str | None) -> None:
    from core import engine

    monkeypatch.setattr(engine, "cpu_has_fast_int8", lambda: change.get("fast_int8", True))
    monkeypatch.setattr(engine, "AUTO_MEASURE_BATCHES", change.get("batches", 1))
    options = {key: value for key, value in change.items() if key in ("precision", "backend", "int8")}
    _, _, summary, lines = _run(scene_pair, tmp_path / "run", **options)
    if declined is None:
        assert "int8" in summary.backend and summary.int8_check.startswith("int8 kept ")
    elif declined:
        assert "int8" not in summary.backend
        assert summary.int8_check.startswith("int8 not used (auto: ") and declined in summary.int8_check
        assert summary.int8_check in lines
    else:  # int8=False: never tried, nothing to say
        assert "int8" not in summary.backend and summary.int8_check == ""


# --- the backend cache: never trusted blindly, never a reason to stop ---------------------------------


def _plant(cache: Path, model: torch.nn.Module, other: torch.nn.Module, *, int8: bool = False) -> Path:
    """Put ``other``'s graph where ``model``'s belongs, with a record whose hash matches (as anyone could)."""
    card = make_card("binary")
    sample = [(np.zeros((3, 64, 64), np.float32), np.ones((3, 64, 64), np.float32))]
    paths = []
    for network in (model, other):
        backend = backend_select.select_backend(network, card, requested="onnxruntime", model_size=64, batch_size=3,
                                                int8=int8, calibration=lambda: sample, cache_dir=cache)
        paths.append(backend.model_path)
        del backend
    target, planted = paths
    assert target != planted
    target.write_bytes(planted.read_bytes())
    record = json.loads(target.with_suffix(".json").read_text())
    record["sha256"] = backend_cache.file_sha256(target)
    target.with_suffix(".json").write_text(json.dumps(record))
    return target


def _other_network() -> torch.nn.Module:
    other = LocalConvModel().eval()
    with torch.no_grad():
        other.body[-1].weight.mul_(-3.0)  # the same architecture, other weights: another model's graph
    return other


@needs_ort
def test_a_graph_planted_in_the_cache_is_caught_on_the_first_batch_and_pytorch_runs_instead(tmp_path: Path,
                                                                                           scene_pair) -> None:
    # a graph of another model with a record whose hash matched it used to be run silently ("cached export")
    prob_torch, mask_torch, _, _ = _run(scene_pair, tmp_path / "torch", backend="torch", precision="fp32")
    planted = _plant(tmp_path / "cache", LocalConvModel().eval(), _other_network())
    prob, mask, summary, lines = _run(scene_pair, tmp_path / "planted", backend="onnxruntime", precision="fp32")
    assert any(line.startswith(f"warning: the graph {planted.name} in the backend cache does not compute what the "
                               "model file's network computes") for line in lines)
    assert summary.backend.startswith("torch fp32")
    np.testing.assert_allclose(prob, prob_torch, atol=1e-5)
    np.testing.assert_array_equal(mask, mask_torch)
    assert not planted.exists()  # removed: the next run exports the model's own graph
    _, _, again, _ = _run(scene_pair, tmp_path / "again", backend="onnxruntime", precision="fp32")
    assert again.backend.startswith("onnxruntime fp32") and "exported now" in again.backend


@needs_ort
def test_a_planted_int8_graph_with_a_planted_check_is_caught_too(tmp_path: Path, scene_pair,
                                                                 any_int8: None) -> None:
    prob_torch, _, _, _ = _run(scene_pair, tmp_path / "torch", backend="torch")  # the precision PyTorch falls back to
    _, _, first, _ = _run(scene_pair, tmp_path / "first", backend="onnxruntime", int8=True)
    assert "int8" in first.backend
    (own,) = (tmp_path / "cache" / "onnx").glob("*-int8-*.onnx")
    (record,) = (tmp_path / "cache" / "onnx").glob("*-int8-*.check.json")
    other = _other_network()
    stranger = backend_select.select_backend(other, make_card("binary"), requested="onnxruntime", model_size=64,
                                             batch_size=3, cache_dir=tmp_path / "elsewhere")
    own.write_bytes(stranger.model_path.read_bytes())
    saved = json.loads(own.with_suffix(".json").read_text())
    saved["sha256"] = backend_cache.file_sha256(own)
    own.with_suffix(".json").write_text(json.dumps(saved))
    check = json.loads(record.read_text())
    check.update(model_sha256=saved["sha256"], agreement=1.0)  # "int8 kept every label"
    record.write_text(json.dumps(check))
    prob, _, summary, lines = _run(scene_pair, tmp_path / "planted", backend="onnxruntime", int8=True)
    assert any(line.startswith("warning: the graph ") and "does not compute what" in line for line in lines)
    assert summary.backend.startswith("torch")
    np.testing.assert_allclose(prob, prob_torch, atol=1e-6)


@needs_ort
def test_the_backend_cache_folders_are_private_to_the_user(tmp_path: Path, scene_pair) -> None:
    _run(scene_pair, tmp_path / "run", backend="onnxruntime")
    for folder in (tmp_path / "cache", tmp_path / "cache" / "onnx"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def _break_cache(how: str, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if how == "a file":
        cache.write_text("a file where the cache folder should be")
        return
    code = {"read-only": errno.EROFS, "full": errno.ENOSPC}[how]

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(backend_cache, "atomic_write_with", refuse)  # as root, permissions alone cannot refuse


@needs_ort
@pytest.mark.parametrize("how", ["a file", "read-only", "full"])
def test_a_backend_cache_that_cannot_be_written_means_pytorch_with_a_warning(tmp_path: Path, scene_pair, how: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # it raised a raw OSError, and failed every default run of 24 batches or more (the race exports a graph)
    _break_cache(how, tmp_path / "cache", monkeypatch)
    long_run = {"precision": "fp32", "batch_size": 1, "overlap": 32}  # 24 batches: auto races the backends
    prob_torch, _, _, _ = _run(scene_pair, tmp_path / "torch", backend="torch", **long_run)
    for backend in ("auto", "onnxruntime"):
        prob, _, summary, lines = _run(scene_pair, tmp_path / backend, backend=backend, **long_run)
        warnings = [line for line in lines if line.startswith(f"warning: the backend cache {tmp_path / 'cache'}")]
        assert warnings and "cannot be written" in warnings[0] and "SCD_CACHE_DIR" in warnings[0], lines
        assert summary.backend.startswith("torch fp32")
        np.testing.assert_allclose(prob, prob_torch, atol=1e-6)
