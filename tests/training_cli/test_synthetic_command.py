"""``python -m training_cli synthetic``: a dataset the loaders read, a scene pair, and no overwriting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training_cli.cli import main
from training_cli.datasets import detect_format, open_dataset


@pytest.mark.parametrize("format", ["second", "binary", "landsat-scd"])
def test_synthetic_dataset_opens_in_its_layout(tmp_path: Path, format: str, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "synth"
    assert main(["synthetic", "--out", str(out), "--format", format, "--pairs", "4", "--size", "64",
                 "--scene-size", "0"]) == 0
    assert "synthetic" in capsys.readouterr().out
    assert detect_format(out) == format
    sizes = {split: len(open_dataset(out, split=split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 2, "val": 1, "test": 1}
    item = open_dataset(out, split="train")[0]
    assert item["t1"].shape == (3, 64, 64)
    if format != "binary":
        assert np.array_equal(item["change"][0].numpy() > 0, item["sem_t1"].numpy() > 0)
        assert (item["sem_t1"][item["change"][0] > 0] > 0).all()
    assert "SYNTHETIC" in (out / "README.txt").read_text()
    assert not list(tmp_path.glob(".*partial*"))


def test_synthetic_scene_and_refusal_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "scene-only"
    assert main(["synthetic", "--out", str(out), "--pairs", "0", "--scene-size", "96"]) == 0
    assert {p.name for p in (out / "scene").iterdir()} >= {"t1.tif", "t2.tif", "truth_fromto.tif"}
    before = sorted(p.stat().st_mtime_ns for p in out.rglob("*"))
    assert main(["synthetic", "--out", str(out), "--pairs", "2", "--scene-size", "0"]) == 2
    assert "already holds files" in capsys.readouterr().err
    assert sorted(p.stat().st_mtime_ns for p in out.rglob("*")) == before
