"""No run may overwrite an input, the model file, another output or a file this tool did not write.

Every refused run must leave every file of the user byte-identical: the tests hash the
inputs and the model before the run and compare after it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from helpers import register_tiny_models

from core import pathguard, synthetic
from core.engine import OutputPaths, RunOptions, run_change_detection
from core.errors import InputError
from core.models import registry
from core.models.card import SECOND_CLASSES
from core.models.checkpoint import make_card, save_checkpoint


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A small pair, its style files, and a model file of a registered tiny network."""
    register_tiny_models(monkeypatch)
    t1, t2, _ = synthetic.write_pair(tmp_path / "in", [c.color for c in SECOND_CLASSES], height=40, width=48)
    (tmp_path / "in" / "t1.qml").write_text("<qgis>the user's own style</qgis>")
    card = make_card("tiny_scd", "second", tile_size=64)
    model = tmp_path / "model.pt"
    save_checkpoint(model, registry.build_model("tiny_scd", **card.options), card)
    return {"t1": t1, "t2": t2, "model": model, "style": tmp_path / "in" / "t1.qml"}


def _digests(paths: list[Path]) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def _refused(files: dict[str, Path], outputs: OutputPaths, *, t1: str | Path | None = None,
             options: RunOptions | None = None) -> str:
    before = _digests(list(files.values()))
    with pytest.raises(InputError) as caught:
        run_change_detection(t1 or files["t1"], files["t2"], files["model"], outputs, options)
    assert _digests(list(files.values())) == before, "a refused run changed a file of the user"
    return str(caught.value)


def test_an_output_named_like_an_input_is_refused_and_the_input_is_untouched(files):
    message = _refused(files, OutputPaths(fromto=files["t1"]))
    assert "input T1" in message and str(files["t1"]) in message


def test_the_transitions_csv_cannot_replace_t2(files):
    assert "input T2" in _refused(files, OutputPaths(fromto=files["t1"].parent / "ft.tif",
                                                     transitions_csv=files["t2"]))


def test_the_change_probability_cannot_replace_the_model_file(files):
    renamed = files["model"].with_suffix(".tif")
    os.replace(files["model"], renamed)  # a model file whose name looks like a raster
    files["model"] = renamed
    assert "model file" in _refused(files, OutputPaths(change_prob=renamed))


def test_an_input_reached_through_a_symbolic_link_or_a_relative_path_is_recognised(files, monkeypatch):
    link = files["t1"].parent / "link.tif"
    link.symlink_to(files["t1"])
    assert "input T1" in _refused(files, OutputPaths(fromto=link))
    monkeypatch.chdir(files["t1"].parent)
    assert "input T2" in _refused(files, OutputPaths(change_prob=Path("..", "in", ".", "t2.tif")))


def test_an_input_given_as_a_gdal_connection_string_is_recognised(files, tmp_path):
    gpkg = tmp_path / "scene.gpkg"
    import rasterio

    with rasterio.open(files["t1"]) as src:
        profile = src.profile | {"driver": "GPKG", "RASTER_TABLE": "t1", "TILE_FORMAT": "PNG"}
        with rasterio.open(gpkg, "w", **{k: v for k, v in profile.items() if k not in ("tiled", "interleave",
                                                                                      "blockxsize", "blockysize",
                                                                                      "compress")}) as dst:
            dst.write(src.read())
    files["gpkg"] = gpkg
    # the connection string is accepted as an input ...
    summary = run_change_detection(f"GPKG:{gpkg}:t1", files["t2"], files["model"],
                                   OutputPaths(change_mask=tmp_path / "mask.tif"))
    assert summary.outputs["change_mask"]
    # ... and the file that holds it is protected
    assert "scene.gpkg" in _refused(files, OutputPaths(transitions_csv=gpkg), t1=f"GPKG:{gpkg}:t1")


def test_two_outputs_sharing_a_style_file_are_refused(files, tmp_path):
    message = _refused(files, OutputPaths(fromto=tmp_path / "a.tif", change_prob=tmp_path / "a.tiff"))
    assert "a.qml" in message and "share" in message


def test_an_output_that_is_another_outputs_style_or_the_same_file_in_another_case_is_refused(files, tmp_path):
    assert "same file" in _refused(files, OutputPaths(fromto=tmp_path / "x.tif", change_prob=tmp_path / "X.TIF"))
    message = _refused(files, OutputPaths(fromto=tmp_path / "x.tif", transitions_csv=tmp_path / "x.qml"))
    assert "x.qml" in message


def test_an_output_whose_style_would_replace_an_inputs_style_is_refused(files):
    # t1.tiff is not T1, but QGIS would read its style from t1.qml, the user's style for T1
    assert "t1.qml" in _refused(files, OutputPaths(fromto=files["t1"].with_suffix(".tiff")))


def test_an_existing_file_this_tool_did_not_write_is_kept_unless_overwriting_is_asked_for(files, tmp_path):
    foreign = tmp_path / "mine.tif"
    synthetic.write_geotiff(foreign, synthetic.render(synthetic.make_scene(8, 8, 2).labels_t1, [(1, 2, 3)] * 2))
    files["foreign"] = foreign
    assert "was not written by this tool" in _refused(files, OutputPaths(change_mask=foreign))
    notes = tmp_path / "notes.csv"
    notes.write_text("my,own,table\n")
    files["notes"] = notes
    assert "notes.csv" in _refused(files, OutputPaths(fromto=tmp_path / "f.tif", transitions_csv=notes))

    summary = run_change_detection(files["t1"], files["t2"], files["model"], OutputPaths(change_mask=foreign),
                                   RunOptions(overwrite=True))
    assert summary.outputs["change_mask"] == str(foreign)


def test_a_second_run_replaces_its_own_earlier_outputs(files, tmp_path):
    outputs = OutputPaths(fromto=tmp_path / "f.tif", transitions_csv=tmp_path / "f.csv")
    run_change_detection(files["t1"], files["t2"], files["model"], outputs)
    first = (tmp_path / "f.tif").stat().st_mtime_ns
    run_change_detection(files["t1"], files["t2"], files["model"], outputs)
    assert (tmp_path / "f.tif").stat().st_mtime_ns >= first
    assert pathguard.is_own_output(tmp_path / "f.tif") and pathguard.is_own_output(tmp_path / "f.csv", "table")


def test_an_output_format_the_engine_does_not_write_is_refused(files, tmp_path):
    assert ".tif" in _refused(files, OutputPaths(fromto=tmp_path / "map.jpg"))
    assert not (tmp_path / "map.jpg").exists()


@pytest.mark.parametrize(("source", "expected"), [
    ("GPKG:/data/a.gpkg:table", "/data/a.gpkg"),
    ('GPKG:"/data/a b.gpkg":table', "/data/a b.gpkg"),
    ("/data/a.gpkg|layername=polygons", "/data/a.gpkg"),
    ("/vsizip//data/a.zip/inner/b.tif", "/data/a.zip"),
    ("NETCDF:/data/c.nc:var", "/data/c.nc"),
    ("C:/data/a.tif", "C:/data/a.tif"),
    ("https://example.org/a.tif", None),
])
def test_connection_strings_name_the_file_that_holds_the_data(source, expected):
    assert pathguard.source_file(source) == expected


def test_a_polygon_geopackage_that_holds_an_input_is_refused(tmp_path):
    holder = tmp_path / "scene.gpkg"
    holder.write_bytes(b"not really a geopackage, but the user's file")
    with pytest.raises(InputError, match="input T1"):
        pathguard.check_outputs([pathguard.Output("OUTPUT_POLYGONS", f"{holder}|layername=changes", "vector",
                                                  overwrite=True)],
                                inputs={"T1": f"GPKG:{holder}:t1", "T2": str(tmp_path / "t2.tif")})
    assert holder.read_bytes() == b"not really a geopackage, but the user's file"
