"""The training CLI, called in-process through ``main(argv)``.

Most cases use two tiny networks registered for the test; the real networks are
covered where it matters (``models`` lists them all, ``init`` writes a loadable
file for each preset with the lightest real network of its task).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TinySCD, register_tiny_models
from torch import nn

from core.models import registry
from core.models.base import ModelSpec
from core.models.card import PRESETS
from core.models.checkpoint import load_checkpoint
from core.models.complexity import count_parameters
from training_cli.cli import main
from training_cli.commands import COMMANDS
from training_cli.commands.init import parse_options

REPO = Path(__file__).resolve().parents[2]

TINY = "tiny_scd", "tiny_bcd"


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    register_tiny_models(monkeypatch)


def _importable_real_networks() -> dict[str, ModelSpec]:
    specs = {}
    for name in registry.model_names():
        try:
            specs[name] = registry.get_spec(name)
        except Exception:  # noqa: BLE001 - networks still being written are left out
            continue
    return specs


def _lightest_real_network(task: str) -> str | None:
    """The real network of ``task`` with the fewest parameters (counted on the meta device)."""
    sizes = {}
    for name, spec in _importable_real_networks().items():
        if spec.task == task:
            with torch.device("meta"):
                sizes[name] = count_parameters(registry.build_model(name))
    return min(sizes, key=sizes.__getitem__) if sizes else None


# --- Help and dispatch -------------------------------------------------------------------------


@pytest.mark.parametrize("command", [None, *(c.NAME for c in COMMANDS)])
def test_help_works_for_every_command(capsys: pytest.CaptureFixture[str], command: str | None) -> None:
    argv = ["--help"] if command is None else [command, "--help"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "python -m training_cli" in out


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "models" in capsys.readouterr().err


def test_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fly"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_runs_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "training_cli", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "init" in result.stdout and "models" in result.stdout


# --- models --------------------------------------------------------------------------------------


def test_models_json_lists_every_network(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    register_tiny_models(monkeypatch)
    monkeypatch.setitem(sys.modules, "core.models._test_broken", None)  # importing it raises ImportError
    monkeypatch.setitem(registry._PACKAGES, "broken_net", "_test_broken")

    assert main(["models", "--json"]) == 0
    entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)["models"]}

    assert set(entries) == set(registry.model_names())
    assert entries["broken_net"]["error"].startswith(("ImportError", "ModuleNotFoundError"))
    for name, entry in entries.items():
        if entry["error"] is not None:
            assert name == "broken_net" or name not in _importable_real_networks(), entry["error"]
            continue
        spec = registry.get_spec(name)
        assert entry["task"] == spec.task
        assert entry["default_tile_size"] == spec.default_tile_size
        assert [row["backbone"] for row in entry["per_backbone"]] == list(spec.backbones)
        for row in entry["per_backbone"]:
            assert row["error"] is None, (name, row["error"])
            assert row["params_m"] > 0 and row["gflops"] > 0
            assert row["paper_params_m"] == spec.paper_params_m.get(row["backbone"])
            assert row["paper_convention"]["paper_g"] == spec.paper_gflops.get(row["backbone"])
        assert entry["params_m"] == entry["per_backbone"][0]["params_m"]

    tiny = entries["tiny_scd"]["per_backbone"][0]
    # Paper convention "macs" at 64 px: half our FLOPs at the same size.
    assert tiny["paper_convention"] == {
        "unit": "macs", "size": 64, "measured_g": pytest.approx(tiny["gflops"] / 2), "paper_g": 0.01
    }
    assert tiny["params"] == count_parameters(TinySCD())


def test_models_table_shows_paper_numbers_and_broken_networks(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_PACKAGES", {})
    register_tiny_models(monkeypatch)
    monkeypatch.setitem(sys.modules, "core.models._test_broken", None)
    monkeypatch.setitem(registry._PACKAGES, "broken_net", "_test_broken")

    assert main(["models"]) == 0
    out = capsys.readouterr().out

    assert "tiny_scd  (semantic change detection; default tile 64 px)" in out
    assert "G MACs@64" in out
    assert "broken_net: cannot be loaded: " in out


# --- init ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "preset"), [("tiny_scd", "second"), ("tiny_scd", "landsat-scd"),
                                               ("tiny_bcd", "binary")])
def test_init_writes_a_loadable_checkpoint(
    tiny: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, preset: str
) -> None:
    out = tmp_path / "model.pt"
    assert main(["init", "--model", model, "--preset", preset, "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out

    loaded, card = load_checkpoint(out)

    assert card.model == model
    assert card.task == PRESETS[preset].task
    assert card.classes == (PRESETS[preset].classes if card.task == "semantic" else ())
    assert card.mean_t1 == PRESETS[preset].mean_t1
    assert card.dataset == "untrained"
    assert getattr(loaded, "num_classes", 0) == card.num_classes


@pytest.mark.parametrize("preset", list(PRESETS))
def test_init_real_network_for_each_preset(tmp_path: Path, preset: str) -> None:
    task = PRESETS[preset].task
    name = _lightest_real_network(task)
    if name is None:
        pytest.skip(f"no {task} network imports yet")
    out = tmp_path / f"{name}.pt"
    assert main(["init", "--model", name, "--preset", preset, "--out", str(out)]) == 0
    _, card = load_checkpoint(out)
    assert (card.model, card.task, card.num_classes) == (name, task, len(PRESETS[preset].classes))


def test_init_options_backbone_and_tile_size_reach_the_card(tiny: None, tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    argv = ["init", "--model", "tiny_scd", "--preset", "second", "--out", str(out), "--option", "width=8",
            "--backbone", "tiny", "--tile-size", "256"]
    assert main(argv) == 0
    model, card = load_checkpoint(out)
    assert card.options == {"backbone": "tiny", "num_classes": 6, "width": 8}
    assert card.tile_size == 256
    assert model.encoder[0].out_channels == 8


def test_init_pretrained_weights_are_used_but_not_referenced(tiny: None, tmp_path: Path) -> None:
    start = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    torch.save(start.state_dict(), tmp_path / "start.pth")
    out = tmp_path / "m.pt"
    argv = ["init", "--model", "tiny_bcd", "--preset", "binary", "--out", str(out),
            "--pretrained", str(tmp_path / "start.pth")]
    assert main(argv) == 0
    model, card = load_checkpoint(out)
    assert torch.equal(model.encoder[0].weight, start[0].weight.detach())
    assert "pretrained" not in card.options or card.options["pretrained"] is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "tiny_bcd", "--preset", "second"],
         "preset 'second' is for semantic change detection, but 'tiny_bcd' is a binary network"),
        (["--model", "tiny_scd", "--preset", "binary"], "use 'second' or 'landsat-scd'"),
        (["--model", "nope", "--preset", "binary"], "unknown model 'nope'"),
        (["--model", "tiny_scd", "--preset", "second", "--backbone", "vgg"], "no backbone 'vgg'"),
        (["--model", "tiny_scd", "--preset", "second", "--tile-size", "100"], "multiple of 32"),
        (["--model", "tiny_scd", "--preset", "second", "--option", "colour=blue"], "invalid options"),
        (["--model", "tiny_scd", "--preset", "second", "--option", "num_classes=3"], "preset sets"),
        (["--model", "tiny_scd", "--preset", "second", "--option", "width"], "KEY=VALUE"),
        (["--model", "tiny_scd", "--preset", "second", "--pretrained", "absent.pth"], "absent.pth"),
    ],
)
def test_init_user_errors_exit_2_with_a_message(
    tiny: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "m.pt"
    assert main(["init", *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not out.exists()


def test_init_wrong_task_with_real_networks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    specs = _importable_real_networks()
    if not specs:
        pytest.skip("no real network imports yet")
    for name, spec in specs.items():
        preset = "binary" if spec.task == "semantic" else "second"
        assert main(["init", "--model", name, "--preset", preset, "--out", str(tmp_path / "m.pt")]) == 2
        assert f"but '{name}' is a {spec.task} network" in capsys.readouterr().err


def test_init_does_not_overwrite_without_force(
    tiny: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.pt"
    out.write_bytes(b"precious")
    argv = ["init", "--model", "tiny_bcd", "--preset", "binary", "--out", str(out)]
    assert main(argv) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    assert main([*argv, "--force"]) == 0
    load_checkpoint(out)


def test_missing_required_argument_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--model", "sscfnet"]) == 2
    assert "--preset" in capsys.readouterr().err


def test_parse_options_reads_json_values_else_text() -> None:
    parsed = parse_options(["a=1", "b=0.5", "c=true", "d=null", "e=paper", 'f="3"', "g="])
    assert parsed == {"a": 1, "b": 0.5, "c": True, "d": None, "e": "paper", "f": "3", "g": ""}
