"""Atomic writes: whole files or none, with the permissions the user's umask gives any new file."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.engine import OutputPaths, run_change_detection
from core.files import atomic_write, atomic_write_text, default_file_mode


@pytest.fixture
def umask_027() -> Iterator[None]:
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_file_gets_the_umask_permissions(tmp_path: Path, umask_027) -> None:
    path = atomic_write_text(tmp_path / "style.qml", "<qgis/>")
    assert _mode(path) == 0o640 == default_file_mode()
    assert path.read_text(encoding="utf-8") == "<qgis/>"


def test_failed_write_keeps_the_old_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "matrix.csv"
    path.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError), atomic_write(path) as stream:
        stream.write("half a ")
        raise RuntimeError("disk full")
    assert path.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["matrix.csv"]


def test_every_engine_output_has_the_same_mode_as_its_geotiff(tmp_path: Path, scene_pair, pointwise,
                                                              umask_027) -> None:
    t1, t2, _ = scene_pair
    out = tmp_path / "out"
    out.mkdir()
    outputs = OutputPaths(fromto=out / "fromto.tif", change_prob=out / "prob.tif",
                          transitions_csv=out / "matrix.csv")
    run_change_detection(t1, t2, pointwise, outputs)
    files = sorted(out.iterdir())
    assert {p.name for p in files} >= {"fromto.tif", "fromto.qml", "fromto.tif.aux.xml", "prob.qml", "matrix.csv"}
    assert {p.name: _mode(p) for p in files} == {p.name: 0o640 for p in files}
