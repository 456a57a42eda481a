"""Inference backends: the runtimes give PyTorch's outputs, the cache is never trusted blindly, ``auto`` explains.

Every network is built once per module at a tiny size with the cheapest options that keep its
architecture, exported once into a module-wide cache and run by each installed runtime.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import LocalConvModel, PointwiseModel, make_card, random_pair

from core.backends import INSTALL_HINT, BackendRace, InferenceBackend, select_backend
from core.backends import measure as backend_measure
from core.backends import select as backend_select
from core.errors import InputError
from core.models.card import ModelCard
from core.models.checkpoint import make_card as card_for
from core.models.registry import build_model, model_names

#: Same spirit as the contract test: the architecture at a fraction of the CPU time.
LIGHT_OPTIONS: dict[str, dict[str, Any]] = {
    "gapl_scd": {"sqmlfi_channels": 32, "head_channels": 16, "btff_channels": 16},
    "lsafnet": {"decoder_channels": 16},
}
SIZE = 64



def _installed(name: str) -> bool:
    return backend_select.runtime_available(name)


RUNTIMES = [pytest.param(name, marks=pytest.mark.skipif(not _installed(name), reason=f"{name} is not installed"))
            for name in ("onnxruntime", "openvino")]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module", params=model_names())
def network(request: pytest.FixtureRequest) -> tuple[torch.nn.Module, ModelCard]:
    name = request.param
    # seeded: untrained LSAFNet's logits reach hundreds, and some draws of its weights put a runtime's
    # rounding over the tolerance, so the weights must not depend on which tests ran before
    torch.manual_seed(0)
    model = build_model(name, **LIGHT_OPTIONS.get(name, {})).eval()
    preset = "second" if model.task == "semantic" else "binary"
    return model, card_for(name, preset, options=model.build_options)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtime_outputs_equal_pytorch(network: tuple[torch.nn.Module, ModelCard], runtime: str,
                                       cache: Path) -> None:
    model, card = network
    backend = select_backend(model, card, requested=runtime, model_size=SIZE, batch_size=2, cache_dir=cache)
    assert backend.name == runtime and backend.model_path is not None
    for batch in (2, 1):  # a full batch and the shorter last one of a scene
        x1, x2 = random_pair(batch, SIZE, SIZE, seed=batch)
        with torch.inference_mode():
            expected = model(x1, x2)
            got = backend(x1.contiguous(memory_format=torch.channels_last), x2)
        assert set(got) == set(expected)
        for key, value in expected.items():
            assert got[key].shape == value.shape
            torch.testing.assert_close(got[key], value, atol=2e-3, rtol=1e-3, msg=f"{runtime} {key}")


def _tiny() -> tuple[torch.nn.Module, ModelCard]:
    return LocalConvModel().eval(), make_card("binary", model="test-localconv")


needs_ort = pytest.mark.skipif(not _installed("onnxruntime"), reason="onnxruntime is not installed")


@needs_ort
def test_second_run_uses_the_cached_export(tmp_path: Path) -> None:
    model, card = _tiny()
    first = select_backend(model, card, requested="onnxruntime", model_size=SIZE, batch_size=1, cache_dir=tmp_path)
    assert "exported now" in first.reason
    stamp = first.model_path.stat().st_mtime_ns
    second = select_backend(model, card, requested="onnxruntime", model_size=SIZE, batch_size=1, cache_dir=tmp_path)
    assert "cached export" in second.reason and second.model_path == first.model_path
    assert second.model_path.stat().st_mtime_ns == stamp
    # another tile size or other weights get their own file
    other_size = select_backend(model, card, requested="onnxruntime", model_size=96, batch_size=1, cache_dir=tmp_path)
    with torch.no_grad():
        model.body[0].weight.mul_(2)
    other_weights = select_backend(model, card, requested="onnxruntime", model_size=SIZE, batch_size=1,
                                   cache_dir=tmp_path)
    assert len({first.model_path, other_size.model_path, other_weights.model_path}) == 3
    x1, x2 = random_pair(1, SIZE, SIZE)
    with torch.inference_mode():
        torch.testing.assert_close(other_weights(x1, x2)["change_prob"], model(x1, x2)["change_prob"],
                                   atol=1e-4, rtol=1e-4)


@needs_ort
def test_weights_are_hashed_once_until_they_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.models import checkpoint

    hashed = []
    real = checkpoint.state_dict_sha256
    monkeypatch.setattr(checkpoint, "state_dict_sha256", lambda state: hashed.append(1) or real(state))
    model, card = _tiny()
    first = select_backend(model, card, requested="onnxruntime", model_size=SIZE, batch_size=1, cache_dir=tmp_path)
    again = select_backend(model, card, requested="onnxruntime", model_size=SIZE, batch_size=1, cache_dir=tmp_path)
    assert len(hashed) == 1 and again.model_path == first.model_path
    # weights changed in place are hashed again and get their own export; loading the first weights back
    # (the tiny network's initialisation is seeded) is hashed again and finds the first export
    with torch.no_grad():
        model.body[0].weight.add_(1)
    changed = select_backend(model, card, requested="onnxruntime", model_size=SIZE, batch_size=1, cache_dir=tmp_path)
    model.load_state_dict(_tiny()[0].state_dict())
    loaded = select_backend(model, card, requested="onnxruntime", model_size=SIZE, batch_size=1, cache_dir=tmp_path)
    assert len(hashed) == 3 and changed.model_path != first.model_path and loaded.model_path == first.model_path


@needs_ort
def test_a_network_whose_code_changed_is_exported_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        request: pytest.FixtureRequest) -> None:
    # the same weights traced from other code are another graph: the cached one must not be used
    package = tmp_path / "edited_network"
    package.mkdir()
    source = package / "scd_edited_network.py"
    code = (
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(6, 1, 1)\n"
        "    def forward(self, x1, x2):\n"
        "        return {'change_prob': torch.sigmoid(self.conv(torch.cat([x1, x2], 1)) * SCALE)}\n"
    )
    source.write_text(code.replace("SCALE", "1.0"))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no cached bytecode to outlive the edit
    monkeypatch.syspath_prepend(str(package))
    edited = importlib.import_module("scd_edited_network")
    request.addfinalizer(lambda: sys.modules.pop("scd_edited_network", None))

    _, card = _tiny()
    model = edited.Net().eval()
    cache = tmp_path / "cache"
    first = select_backend(model, card, requested="onnxruntime", model_size=SIZE, batch_size=1, cache_dir=cache)
    source.write_text(code.replace("SCALE", "2.5 - 0.5"))
    importlib.reload(edited)
    changed = edited.Net().eval()
    changed.load_state_dict(model.state_dict())
    backend_select.network_code_digest.cache_clear()
    again = select_backend(changed, card, requested="onnxruntime", model_size=SIZE, batch_size=1, cache_dir=cache)
    assert "exported now" in again.reason and again.model_path != first.model_path
    x1, x2 = random_pair(1, SIZE, SIZE)
    with torch.inference_mode():
        torch.testing.assert_close(again(x1, x2)["change_prob"], changed(x1, x2)["change_prob"], atol=1e-4, rtol=1e-4)
    backend_select.network_code_digest.cache_clear()


@needs_ort
@pytest.mark.parametrize("damage", ["truncate", "flip-bytes", "record"])
def test_damaged_cache_entry_is_rebuilt_not_used(tmp_path: Path, damage: str) -> None:
    model, card = _tiny()
    first = select_backend(model, card, requested="onnxruntime", model_size=SIZE, batch_size=1, cache_dir=tmp_path)
    path = first.model_path
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip-bytes":
        path.write_bytes(data[:-64] + bytes(64))
    else:
        path.with_suffix(".json").write_text("{not json")
    again = select_backend(model, card, requested="onnxruntime", model_size=SIZE, batch_size=1, cache_dir=tmp_path)
    assert "exported now" in again.reason
    assert again.model_path.read_bytes() == data
    assert json.loads(again.model_path.with_suffix(".json").read_text())["output_names"] == ["change_prob"]
    x1, x2 = random_pair(1, SIZE, SIZE)
    with torch.inference_mode():
        torch.testing.assert_close(again(x1, x2)["change_prob"], model(x1, x2)["change_prob"], atol=1e-4, rtol=1e-4)
    assert not list(tmp_path.rglob("*.partial"))


needs_both = pytest.mark.skipif(not (_installed("onnxruntime") and _installed("openvino")),
                                reason="needs ONNX Runtime and OpenVINO")


def _fake_speeds(monkeypatch: pytest.MonkeyPatch, speed: dict[str, float]) -> list[str]:
    """Make the race time ``speed[name]`` seconds per batch (the forward pass still runs); returns who ran, in turn."""
    ran: list[str] = []

    def fake_time(race: BackendRace, name: str, x1: Any, x2: Any) -> tuple[dict[str, torch.Tensor], float]:
        ran.append(name)
        return race._live[name][1](x1, x2), speed[name]

    monkeypatch.setattr(BackendRace, "_time", fake_time)
    return ran


def _race(backend: InferenceBackend | BackendRace, batch: int, *, limit: int = 50) -> InferenceBackend | BackendRace:
    """Run full batches through ``backend`` as the engine would, until a race has decided."""
    x1, x2 = random_pair(batch, SIZE, SIZE)
    for _ in range(limit):
        if not (isinstance(backend, BackendRace) and backend.measuring):
            return backend
        got = backend(x1, x2)
        assert got["change_prob"].shape == (batch, 1, SIZE, SIZE)
    raise AssertionError("the race did not decide")


def _timed(ran: list[str]) -> list[str]:
    return sorted(set(ran))


@needs_both
def test_auto_measures_which_backend_is_fastest_on_the_runs_batches_once_and_remembers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, card = _tiny()
    speed = {"torch": 0.3, "onnxruntime": 0.2, "openvino": 0.5}
    ran = _fake_speeds(monkeypatch, speed)
    choose = lambda: select_backend(model, card, model_size=SIZE, batch_size=2, cache_dir=tmp_path,  # noqa: E731
                                    expected_batches=100)
    first = choose()
    assert isinstance(first, BackendRace) and first.measuring and first.name == "auto"
    assert "measuring torch, openvino, onnxruntime on this run's batches in turns" in first.describe()
    _race(first, 2)
    # each runtime warms up once, then alternates with PyTorch; every batch's result was used
    assert ran == ["torch", "openvino", "openvino", "torch", "openvino", "torch",
                   "onnxruntime", "onnxruntime", "torch", "onnxruntime", "torch"]
    assert first.name == "onnxruntime" and not first.measuring
    assert ("measured fastest on this run's batches (onnxruntime 200 ms, torch 300 ms, openvino 500 ms per batch "
            "of 2)" in first.describe())
    records = list((tmp_path / "onnx" / "choices").glob("*.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["runtime"] == "onnxruntime"
    # the winner runs the rest untimed, a short last batch too
    ran.clear()
    x1, x2 = random_pair(1, SIZE, SIZE)
    with torch.inference_mode():
        torch.testing.assert_close(first(x1, x2)["change_prob"], model(x1, x2)["change_prob"], atol=1e-4, rtol=1e-4)
    assert not ran
    # an int8 run ranks only the runtimes, in a record of its own that leaves this one alone
    calibration = lambda: [(np.zeros((3, SIZE, SIZE), np.float32),) * 2]  # noqa: E731
    quantised = _race(select_backend(model, card, model_size=SIZE, batch_size=2, cache_dir=tmp_path,
                                     expected_batches=100, int8=True, calibration=calibration), 2)
    assert quantised.int8 and quantised.name == "onnxruntime"
    assert "torch" not in ran and len(list((tmp_path / "onnx" / "choices").glob("*.json"))) == 2
    assert json.loads(records[0].read_text())["runtime"] == "onnxruntime"
    # remembered: the next run neither measures nor changes its mind
    speed.update(onnxruntime=0.9, openvino=0.1)
    ran.clear()
    again = choose()
    assert again.name == "onnxruntime" and isinstance(again, InferenceBackend)
    assert "measured fastest here earlier" in again.reason
    _race(again, 2)
    assert not ran
    # another CPU or thread count, or a damaged record, measures again
    monkeypatch.setattr(backend_measure, "cpu_signature", lambda: "another CPU|8 cpus|8 threads")
    assert _race(choose(), 2).name == "openvino" and _timed(ran) == ["onnxruntime", "openvino", "torch"]
    monkeypatch.undo()
    ran = _fake_speeds(monkeypatch, speed)
    records[0].write_text("{not json")
    assert _race(choose(), 2).name == "openvino" and len(ran) == 11
    # a run too short to afford measuring stays on PyTorch, says why, and leaves the record alone
    records[0].unlink()
    short = select_backend(model, card, model_size=SIZE, batch_size=2, cache_dir=tmp_path, expected_batches=10)
    assert short.name == "torch" and "until a run of 24 batches" in short.reason
    assert not records[0].exists()


@needs_ort
def test_a_race_times_full_batches_only_and_a_run_that_ends_first_decides_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, card = _tiny()
    monkeypatch.setattr(backend_select, "runtime_available", lambda name: name == "onnxruntime")
    ran = _fake_speeds(monkeypatch, {"torch": 0.3, "onnxruntime": 0.1})
    race = select_backend(model, card, model_size=SIZE, batch_size=2, cache_dir=tmp_path, expected_batches=100)
    assert isinstance(race, BackendRace)
    short = random_pair(1, SIZE, SIZE)
    for _ in range(3):
        race(*short)  # a short batch (skipped tiles, the scene's end) goes to PyTorch, untimed
    assert not ran and race.measuring
    race(*random_pair(2, SIZE, SIZE))
    assert ran == ["torch"] and "(0 of 4 timed batches so far)" in race.describe()
    assert not list(tmp_path.rglob("choices/*.json"))  # the run ended here: nothing is remembered


@needs_ort
def test_a_runtime_that_fails_on_a_batch_is_left_out_and_the_run_goes_on(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    model, card = _tiny()
    monkeypatch.setattr(backend_select, "runtime_available", lambda name: name == "onnxruntime")
    ran = _fake_speeds(monkeypatch, {"torch": 0.3, "onnxruntime": 0.1})
    timed = BackendRace._time

    def failing(race: BackendRace, name: str, x1: Any, x2: Any) -> tuple[dict[str, torch.Tensor], float]:
        if name == "onnxruntime" and len(ran) >= 2:
            raise RuntimeError("bad allocation")
        return timed(race, name, x1, x2)

    monkeypatch.setattr(BackendRace, "_time", failing)
    backend = _race(select_backend(model, card, model_size=SIZE, batch_size=2, cache_dir=tmp_path,
                                   expected_batches=100), 2)
    assert backend.name == "torch" and "onnxruntime failed on a batch (RuntimeError)" in backend.describe()
    assert "onnxruntime failed" in backend.describe()  # remembered as failed: the next run does not try it
    again = select_backend(model, card, model_size=SIZE, batch_size=2, cache_dir=tmp_path, expected_batches=100)
    assert again.name == "torch" and isinstance(again, InferenceBackend)


@needs_ort
def test_auto_never_picks_a_runtime_slower_than_pytorch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, card = _tiny()
    monkeypatch.setattr(backend_select, "runtime_available", lambda name: name == "onnxruntime")
    ran = _fake_speeds(monkeypatch, {"torch": 0.1, "onnxruntime": 0.4})
    backend = _race(select_backend(model, card, model_size=SIZE, batch_size=1, cache_dir=tmp_path,
                                   expected_batches=100), 1)
    assert backend.name == "torch" and _timed(ran) == ["onnxruntime", "torch"]
    assert "(torch 100 ms, onnxruntime 400 ms per batch of 1)" in backend.describe()
    # a near-tie stays with PyTorch: a runtime must take under RUNTIME_MARGIN of its time
    for ratio, winner in ((0.95, "torch"), (0.8, "onnxruntime")):
        _fake_speeds(monkeypatch, {"torch": 0.1, "onnxruntime": 0.1 * ratio})
        cache = tmp_path / f"margin-{ratio}"
        assert _race(select_backend(model, card, model_size=SIZE, batch_size=1, cache_dir=cache,
                                    expected_batches=100), 1).name == winner


@needs_ort
def test_a_runtime_that_cannot_load_the_graph_is_remembered_as_failed(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    model, card = _tiny()
    monkeypatch.setattr(backend_select, "runtime_available", lambda name: name == "onnxruntime")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Exception from src/plugin.cpp:54:\nException from src/pass.cpp:298:\n"
                           "node MatMul cannot be compiled\n")

    monkeypatch.setattr(backend_select, "OnnxRuntimeForward", broken)
    with pytest.raises(InputError, match=r"onnxruntime could not load the fp32 graph .*\(node MatMul cannot be "):
        select_backend(model, card, requested="onnxruntime", model_size=SIZE, batch_size=1, cache_dir=tmp_path)
    ran = _fake_speeds(monkeypatch, {"torch": 0.3})
    backend = _race(select_backend(model, card, model_size=SIZE, batch_size=1, cache_dir=tmp_path,
                                   expected_batches=100), 1)
    assert backend.name == "torch" and "onnxruntime failed" in backend.describe() and set(ran) == {"torch"}
    ran.clear()
    again = select_backend(model, card, model_size=SIZE, batch_size=1, cache_dir=tmp_path, expected_batches=100)
    assert again.name == "torch" and isinstance(again, InferenceBackend)  # not tried again


def test_a_cache_folder_that_cannot_be_written_only_means_measuring_again(tmp_path: Path) -> None:
    blocked = tmp_path / "choices"
    blocked.write_text("a file where the folder should be")
    record = blocked / "ranking.json"
    backend_measure.remember(record, "torch", {"torch": 0.1})  # no error: logged
    assert backend_measure.remembered(record, ["torch"]) is None


@needs_ort
def test_a_race_times_the_real_forward_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, card = _tiny()
    monkeypatch.setattr(backend_select, "runtime_available", lambda name: name == "onnxruntime")
    backend = _race(select_backend(model, card, model_size=SIZE, batch_size=2, cache_dir=tmp_path,
                                   expected_batches=100), 2)
    record = json.loads(next(tmp_path.rglob("choices/*.json")).read_text())
    assert set(record["seconds"]) == {"torch", "onnxruntime"}
    assert all(0 < value < 10 for value in record["seconds"].values()) and backend.name == record["runtime"]


def test_auto_without_runtimes_runs_torch_and_says_what_to_install(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_select, "runtime_available", lambda name: False)
    model, card = _tiny()
    backend = select_backend(model, card, model_size=SIZE, batch_size=1, cache_dir=tmp_path)
    assert backend.name == "torch" and backend.forward is model
    assert INSTALL_HINT in backend.reason
    with pytest.raises(InputError, match="pip install openvino"):
        select_backend(model, card, requested="openvino", model_size=SIZE, batch_size=1, cache_dir=tmp_path)
    assert not tmp_path.joinpath("onnx").exists()


@needs_ort
def test_auto_keeps_torch_where_a_runtime_cannot_help(tmp_path: Path) -> None:
    model, card = _tiny()
    kwargs = {"model_size": SIZE, "batch_size": 1, "cache_dir": tmp_path}
    on_gpu = select_backend(model, card, device=torch.device("meta"), **kwargs)
    assert on_gpu.name == "torch" and "meta" in on_gpu.reason
    bf16 = select_backend(model, card, autocast_dtype=torch.bfloat16, precision_named=True, expected_batches=100,
                          **kwargs)
    assert bf16.name == "torch" and bf16.autocast is torch.bfloat16 and "bf16 autocast asked for" in bf16.reason
    small = select_backend(model, card, expected_batches=2, **kwargs)
    assert small.name == "torch" and "2 batch" in small.reason
    assert not tmp_path.joinpath("onnx").exists()
    with pytest.raises(InputError, match="runs on the CPU"):
        select_backend(model, card, requested="onnxruntime", device=torch.device("meta"), **kwargs)


def test_unknown_backend_and_int8_on_torch_are_refused(tmp_path: Path) -> None:
    model, card = _tiny()
    with pytest.raises(InputError, match="choose one of auto, torch, onnxruntime, openvino"):
        select_backend(model, card, requested="tensorrt", model_size=SIZE, batch_size=1, cache_dir=tmp_path)
    with pytest.raises(InputError, match="int8 runs on ONNX Runtime"):
        select_backend(model, card, requested="torch", int8=True, model_size=SIZE, batch_size=1)


@needs_ort
def test_network_that_cannot_be_exported_falls_back_under_auto_only(tmp_path: Path) -> None:
    class Unexportable(PointwiseModel):
        def predict(self, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
            out = super().predict(x1, x2)
            out["change_prob"] = torch.from_numpy(out["change_prob"].numpy().copy())  # leaves the graph
            return out

    model, card = Unexportable().eval(), make_card()
    with pytest.raises(InputError, match="does not reproduce PyTorch"):
        select_backend(model, card, requested="onnxruntime", model_size=SIZE, batch_size=1, cache_dir=tmp_path)
    backend = _race(select_backend(model, card, model_size=SIZE, batch_size=1, cache_dir=tmp_path,
                                   expected_batches=100), 1)
    assert backend.name == "torch" and "onnxruntime failed" in backend.describe()


@needs_ort
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_int8_graph_is_quantised_and_close_to_fp32(tmp_path: Path, runtime: str) -> None:
    import onnx

    model, card = _tiny()
    sample = [tuple(t[0].numpy() for t in random_pair(1, SIZE, SIZE, seed=s)) for s in range(4)]
    calls = []

    def calibration() -> list[tuple[np.ndarray, np.ndarray]]:
        calls.append(1)
        return sample

    backend = select_backend(model, card, requested=runtime, int8=True, calibration=calibration,
                             model_size=SIZE, batch_size=1, cache_dir=tmp_path)
    assert backend.int8 and "int8" in backend.describe()
    graph = onnx.load(str(backend.model_path)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.node}
    # convolutions are int8 but for the classifier that writes the output, which stays fp32
    produced_by = {tensor: node for node in graph.node for tensor in node.output}
    int8_weights = [getattr(produced_by.get(node.input[1]), "op_type", None) == "DequantizeLinear"
                    for node in graph.node if node.op_type == "Conv"]
    assert int8_weights == [True, True, True, False]
    x1, x2 = (torch.from_numpy(a[None]) for a in sample[0])
    with torch.inference_mode():
        expected = model(x1, x2)["change_prob"]
    got = backend(x1, x2)["change_prob"]
    assert float((got - expected).abs().max()) < 0.05
    confident = (expected - 0.5).abs() > 0.05  # an untrained network: many pixels sit at 0.5
    assert bool(((got > 0.5) == (expected > 0.5))[confident].all())
    again = select_backend(model, card, requested=runtime, int8=True, calibration=calibration,
                           model_size=SIZE, batch_size=1, cache_dir=tmp_path)
    assert again.model_path == backend.model_path and "cached export" in again.reason


@needs_ort
@needs_ort
def test_int8_quantises_the_encoder_whole_and_only_convolutions_after_it(tmp_path: Path) -> None:
    """The ResNet encoder runs in int8 throughout; the fusion and attention blocks' additions and
    products, which cost labels when quantised, stay fp32."""
    import onnx

    model = build_model("gapl_scd", **LIGHT_OPTIONS["gapl_scd"]).eval()
    card = card_for("gapl_scd", "second", options=model.build_options)
    sample = [tuple(t[0].numpy() for t in random_pair(1, SIZE, SIZE, seed=s)) for s in range(2)]
    backend = select_backend(model, card, requested="onnxruntime", int8=True, calibration=lambda: sample,
                             model_size=SIZE, batch_size=1, cache_dir=tmp_path)
    # what ONNX Runtime makes of the QDQ graph: the int8 kernels it runs, node by node
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(str(backend.model_path), options, providers=["CPUExecutionProvider"])
    optimised = onnx.load(options.optimized_model_filepath).graph
    ran = [(node.name.startswith("/encoder/"), node.op_type) for node in optimised.node]
    # in the encoder tensors stay int8 from one convolution to the next: no fp32 -> int8 step is left
    # (quantising its convolutions alone left 17 of them in this network)
    assert (True, "QLinearAdd") in ran and (True, "Add") not in ran and (True, "QuantizeLinear") not in ran
    assert (False, "Add") in ran and (False, "QLinearAdd") not in ran and (False, "QLinearMul") not in ran
    assert (False, "QLinearConv") in ran


def test_a_cached_graph_is_loaded_once_at_the_runs_arithmetic(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading is most of a runtime's per-run set-up: a fresh export loads once more to prove itself at
    fp32; a cached one loads once, and an int8 run whose int8 file is cached never loads the fp32 graph."""
    model, card = _tiny()
    loaded: list[str] = []
    real = backend_select.OnnxRuntimeForward

    def counting(path: Path, *args: Any, **kwargs: Any) -> Any:
        loaded.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(backend_select, "OnnxRuntimeForward", counting)
    sample = [tuple(t[0].numpy() for t in random_pair(1, SIZE, SIZE, seed=s)) for s in range(2)]

    def select(int8: bool) -> InferenceBackend:
        return select_backend(model, card, requested="onnxruntime", int8=int8, calibration=lambda: sample,
                              model_size=SIZE, batch_size=1, cache_dir=tmp_path)

    fresh = select(False)
    assert loaded == [fresh.model_path.name]  # fp32 is the run's arithmetic: the proving load is the one used
    loaded.clear()
    select(False)
    assert loaded == [fresh.model_path.name]
    loaded.clear()
    quantised = select(True)
    assert loaded == [quantised.model_path.name] and quantised.model_path != fresh.model_path
    loaded.clear()
    fresh.model_path.unlink()  # the int8 file stands on its own once written
    assert select(True).model_path == quantised.model_path and loaded == [quantised.model_path.name]


@pytest.mark.skipif(not _installed("openvino"), reason="openvino is not installed")
def test_a_cached_graph_is_compiled_once_for_bf16(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, card = _tiny()
    compiled: list[str] = []
    real = backend_select.OpenVinoForward

    def counting(*args: Any, precision: str, **kwargs: Any) -> Any:
        compiled.append(precision)
        return real(*args, precision=precision, **kwargs)

    monkeypatch.setattr(backend_select, "OpenVinoForward", counting)
    for expected in (["f32", "bf16"], ["bf16"]):  # a fresh export proves itself at fp32 first
        compiled.clear()
        select_backend(model, card, requested="openvino", model_size=SIZE, batch_size=1,
                       autocast_dtype=torch.bfloat16, cache_dir=tmp_path)
        assert compiled == expected


@pytest.mark.skipif(not _installed("openvino"), reason="openvino is not installed")
def test_openvino_compiles_a_cached_graph_from_its_checked_ir(tmp_path: Path) -> None:
    from core.backends.runtimes import OpenVinoForward

    model, card = _tiny()
    backend = select_backend(model, card, requested="openvino", model_size=SIZE, batch_size=2, cache_dir=tmp_path)
    onnx_path = backend.model_path
    del backend  # its compiled model may map the IR's weights, which this test overwrites in place
    gc.collect()
    folder = onnx_path.parent / "openvino"
    (ir,) = folder.glob("*.xml")  # the reshaped graph, named by the ONNX file's recorded digest and the shape
    assert ir.name.endswith("-2x3x64x64.xml") and ir.with_suffix(".sha256").exists()
    x1, x2 = random_pair(2, SIZE, SIZE, seed=3)
    with torch.inference_mode():
        expected = model(x1, x2)["change_prob"]

    def run() -> torch.Tensor:
        forward = OpenVinoForward(onnx_path, ["change_prob"], 2, 3, SIZE)
        return forward(x1, x2)["change_prob"]

    torch.testing.assert_close(run(), expected, atol=1e-5, rtol=1e-4)  # from OpenVINO's cache, by the IR's path
    # a damaged IR is caught when OpenVINO has to compile it again, and written anew from the ONNX file:
    # first weights that still compile (the first convolution's zeroed), then a file that does not
    weights = ir.with_suffix(".bin")
    intact = weights.read_bytes()
    kernel = model.body[0].weight.detach().numpy().tobytes()
    assert intact.count(kernel) == 1
    for damaged in (intact.replace(kernel, bytes(len(kernel))), bytes(len(intact))):
        weights.write_bytes(damaged)
        for blob in folder.glob("*.blob"):
            blob.unlink()
        torch.testing.assert_close(run(), expected, atol=1e-5, rtol=1e-4)
        assert weights.read_bytes() == intact


CTRL_C_AFTER_TWO_MODELS = """
import gc, signal, sys
from pathlib import Path
from core.backends.runtimes import OpenVinoForward
first = OpenVinoForward(Path(sys.argv[1]), ["change_prob"], 1, 3, 64)
second = OpenVinoForward(Path(sys.argv[1]), ["change_prob"], 1, 3, 64)
del first; gc.collect()
del second; gc.collect()  # freed in the order they were made, as after a race or the int8 check
caught = []
signal.signal(signal.SIGINT, lambda *_: caught.append(True))
signal.raise_signal(signal.SIGINT)
print("handled" if caught else "not handled")
"""


@pytest.mark.skipif(not _installed("openvino"), reason="openvino is not installed")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the signal stack is kept on Linux")
def test_ctrl_c_after_openvino_models_are_freed_is_handled_not_a_crash(tmp_path: Path) -> None:
    model, card = _tiny()
    backend = select_backend(model, card, requested="openvino", model_size=SIZE, batch_size=1, cache_dir=tmp_path)
    root = Path(__file__).resolve().parents[3]
    child = subprocess.run([sys.executable, "-c", CTRL_C_AFTER_TWO_MODELS, str(backend.model_path)], cwd=root,
                           env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip().splitlines()[-1] == "handled"


def test_backend_describes_itself() -> None:
    backend = InferenceBackend("torch", "requested", lambda a, b: {})
    assert backend.channels_last and backend.describe() == "torch fp32 (requested)"
    quantised = InferenceBackend("openvino", "auto: x", lambda a, b: {}, int8=True, precision="int8")
    assert not quantised.channels_last and quantised.describe() == "openvino int8 (auto: x)"


@needs_ort
def test_checkpoint_exports_beside_itself_without_overwriting(tmp_path: Path) -> None:
    import onnxruntime

    from core.backends.export import export_checkpoint
    from core.models.checkpoint import save_checkpoint

    network = build_model("sscfnet").eval()
    checkpoint = save_checkpoint(tmp_path / "model.pt", network,
                                 card_for("sscfnet", "binary", tile_size=64, options=network.build_options))
    written = export_checkpoint(checkpoint)
    assert written == tmp_path / "model.64px.onnx"
    session = onnxruntime.InferenceSession(str(written), providers=["CPUExecutionProvider"])
    x1, x2 = random_pair(1, 64, 64)
    (prob,) = session.run(["change_prob"], {"x1": x1.numpy(), "x2": x2.numpy()})
    with torch.inference_mode():
        np.testing.assert_allclose(prob, network(x1, x2)["change_prob"].numpy(), atol=1e-4)
    before = written.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        export_checkpoint(checkpoint)
    assert written.read_bytes() == before
