"""Atomic writes: whole files or none, with the permissions the user's umask gives any new file; temporary names."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import files
from core.engine import OutputPaths, run_change_detection
from core.files import (
    PARTIAL_SUFFIX,
    Publication,
    atomic_write,
    atomic_write_text,
    default_file_mode,
    is_partial,
    partial_path,
    staged_name,
)


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


def _state(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file of ``folder`` with its inode, modification time and bytes: "exactly as it was"."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


def test_a_publication_moves_every_staged_file_into_place_together(tmp_path: Path) -> None:
    (tmp_path / "map.tif").write_text("old map")
    (tmp_path / "map.qml").write_text("old style")  # the new map has no style: the old one must not describe it
    publication = Publication()
    for name, text in (("map.tif", "new map"), ("report.csv", "new table")):
        staged = staged_name(tmp_path / name)
        staged.write_text(text)
        publication.stage(staged, tmp_path / name, replaces=[tmp_path / "map.qml"] if name == "map.tif" else ())
    assert publication.where(tmp_path / "map.tif").name.startswith(".map.partial-")
    assert (tmp_path / "map.tif").read_text() == "old map"  # nothing moves before the commit
    publication.commit()
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"map.tif": "new map", "report.csv": "new table"}
    assert publication.where(tmp_path / "map.tif") == tmp_path / "map.tif"


def test_a_publication_that_fails_midway_or_is_discarded_leaves_the_earlier_files_exactly(tmp_path: Path) -> None:
    for name in ("a.tif", "b.csv", "c.html"):
        (tmp_path / name).write_text(f"earlier {name}")
    before = _state(tmp_path)
    publication = Publication()
    for name in ("a.tif", "b.csv", "c.html"):
        staged = staged_name(tmp_path / name)
        staged.write_text(f"new {name}")
        publication.stage(staged, tmp_path / name)
    publication.where(tmp_path / "c.html").unlink()  # the last rename fails, after two files were placed
    with pytest.raises(FileNotFoundError):
        publication.commit()
    assert _state(tmp_path) == before  # the same files (inode, time, bytes), nothing hidden left over
    discarded = Publication()
    staged = staged_name(tmp_path / "a.tif")
    staged.write_text("new")
    discarded.stage(staged, tmp_path / "a.tif")
    discarded.discard()
    assert _state(tmp_path) == before


def test_a_temporary_name_is_hidden_unique_beside_its_final_name_and_recognised(tmp_path: Path) -> None:
    final = tmp_path / "site-20250101-120000-abcdef"
    first, second = partial_path(final), partial_path(final)
    assert first != second and first.parent == tmp_path
    assert first.name.startswith(f".{final.name}.") and first.name.endswith(PARTIAL_SUFFIX)
    assert is_partial(first) and not is_partial(final) and not is_partial(tmp_path / "report.partial")


def test_an_atomic_write_uses_the_one_temporary_name(tmp_path: Path) -> None:
    path = tmp_path / "active.txt"
    with atomic_write(path) as stream:
        stream.write("site-1\n")
        assert [p for p in tmp_path.iterdir() if is_partial(p)], "written under a temporary name first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["active.txt"]


def test_the_file_helpers_import_only_the_standard_library() -> None:
    """The plugin's installer uses them in a QGIS without numpy's or torch's help (nothing installed yet)."""
    import ast

    tree = ast.parse(Path(files.__file__).read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported <= sys.stdlib_module_names, imported - sys.stdlib_module_names
