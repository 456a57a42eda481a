"""The engine end to end on synthetic GeoTIFFs: alignment, tiling, nodata, outputs and refusals."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from helpers import LocalConvModel, PointwiseModel, make_card, read_band
from osgeo import gdal

from core import synthetic
from core.engine import OutputPaths, Progress, RunOptions, run_change_detection
from core.errors import Cancelled, ChangeDetectionError, InputError
from core.models.card import SECOND_CLASSES

PALETTE = [c.color for c in SECOND_CLASSES]


def _outputs(folder: Path, *names: str) -> OutputPaths:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.tif" for name in names if name != "transitions_csv"}
    if "transitions_csv" in names:
        paths["transitions_csv"] = folder / "transitions.csv"
    return OutputPaths(**paths)


def _finished_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_tiled_run_of_a_pointwise_model_equals_the_whole_image(tmp_path: Path, scene_pair) -> None:
    t1, t2, _ = scene_pair
    model, card = PointwiseModel().eval(), make_card()
    names = ("fromto", "change_prob", "t1_classes", "t2_classes")
    whole = run_change_detection(t1, t2, (model, card), _outputs(tmp_path / "whole", *names),
                                 RunOptions(tile_size=256, overlap=0))
    tiled = run_change_detection(t1, t2, (model, card), _outputs(tmp_path / "tiled", *names),
                                 RunOptions(tile_size=64, overlap=16, batch_size=3, prefetch_batches=2))
    assert whole.tiles_total == 1 and tiled.tiles_total > 6
    np.testing.assert_allclose(read_band(tmp_path / "tiled/change_prob.tif"),
                               read_band(tmp_path / "whole/change_prob.tif"), rtol=0, atol=1e-5)
    for name in ("fromto", "t1_classes", "t2_classes"):
        np.testing.assert_array_equal(read_band(tmp_path / f"tiled/{name}.tif"),
                                      read_band(tmp_path / f"whole/{name}.tif"))


def test_convolutional_model_shows_no_seam(tmp_path: Path, scene_pair) -> None:
    t1, t2, _ = scene_pair
    model, card = LocalConvModel().eval(), make_card("binary")
    run_change_detection(t1, t2, (model, card), _outputs(tmp_path / "whole", "change_prob"),
                         RunOptions(tile_size=256, overlap=0))
    run_change_detection(t1, t2, (model, card), _outputs(tmp_path / "tiled", "change_prob"),
                         RunOptions(tile_size=64, overlap=24))
    whole = read_band(tmp_path / "whole/change_prob.tif")
    tiled = read_band(tmp_path / "tiled/change_prob.tif")
    # differences only come from the tiles' own borders, which the blend weights down to almost nothing
    assert np.abs(tiled - whole).max() < 0.02


def test_from_to_output_is_georeferenced_and_carries_its_legend(tmp_path: Path, scene_pair, pointwise) -> None:
    t1, t2, _ = scene_pair
    out = _outputs(tmp_path / "out", "fromto", "transitions_csv")
    summary = run_change_detection(t1, t2, pointwise, out, RunOptions(tile_size=64))
    with rasterio.open(t1) as src, rasterio.open(out.fromto) as dst:
        assert dst.crs == src.crs
        assert dst.transform == src.transform
        assert dst.dtypes[0] == "uint8"
        assert dst.nodata == 255
        codes = dst.read(1)
    assert codes.max() <= 36
    assert summary.changed_pixels == int((codes > 0).sum())
    ds = gdal.Open(str(out.fromto))
    band = ds.GetRasterBand(1)
    assert band.GetDefaultRAT() is not None  # GDAL 3.6 loads the PAM sidecar on this first call
    names = band.GetCategoryNames()
    assert names[0] == "No change"
    assert names[1 + 2 * 6 + 4] == "Low vegetation -> Building"
    table = band.GetColorTable()
    assert table is not None and table.GetColorEntry(0)[3] == 0  # no change is transparent
    assert Path(str(out.fromto).replace(".tif", ".qml")).exists()
    csv_text = Path(out.transitions_csv).read_text()
    assert "Building" in csv_text
    ds = None


def test_t2_in_another_crs_and_resolution_with_nodata_borders(tmp_path: Path) -> None:
    scene = synthetic.make_scene(160, 160, 6, seed=5)
    image1 = synthetic.render(scene.labels_t1, PALETTE, seed=1)
    image2 = synthetic.render(scene.labels_t2, PALETTE, seed=2)
    image1[:, :, :12] = 0  # nodata border on the left of T1
    transform = Affine(10.0, 0, 600000.0, 0, -10.0, 5500000.0)
    t1 = synthetic.write_geotiff(tmp_path / "t1.tif", image1, crs="EPSG:32633", transform=transform, nodata=0)
    t2_utm = synthetic.write_geotiff(tmp_path / "t2_utm.tif", image2, crs="EPSG:32633", transform=transform)
    t2 = synthetic.reproject_geotiff(t2_utm, tmp_path / "t2_wgs84.tif", "EPSG:4326", resolution=0.0002, nodata=0)
    out = _outputs(tmp_path / "out", "fromto", "change_prob")
    summary = run_change_detection(t1, t2, (PointwiseModel().eval(), make_card()), out, RunOptions(tile_size=64))
    with rasterio.open(out.fromto) as dst, rasterio.open(t1) as src:
        assert dst.crs == src.crs
        assert dst.res == src.res
        codes = dst.read(1)
        # the output lies on T1's grid: its origin is a whole number of T1 pixels from T1's
        col = (dst.transform.c - src.transform.c) / src.res[0]
        row = (src.transform.f - dst.transform.f) / src.res[1]
        assert abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6
        left = round(col)
    assert np.all(codes[:, : max(0, 12 - left)] == 255)  # T1's nodata border stays nodata
    assert (codes != 255).mean() > 0.5
    assert summary.valid_pixels == int((codes != 255).sum())
    prob = read_band(Path(out.change_prob))
    assert np.all(prob[codes == 255] == -1.0)


def test_geographic_t1_gives_areas_in_square_metres(tmp_path: Path) -> None:
    scene = synthetic.make_scene(64, 64, 6, seed=2)
    transform = Affine(0.0001, 0, 10.0, 0, -0.0001, 60.0)  # about 5.6 m x 11 m at 60 degrees north
    t1 = synthetic.write_geotiff(tmp_path / "t1.tif", synthetic.render(scene.labels_t1, PALETTE),
                                 crs="EPSG:4326", transform=transform)
    t2 = synthetic.write_geotiff(tmp_path / "t2.tif", synthetic.render(scene.labels_t2, PALETTE, seed=4),
                                 crs="EPSG:4326", transform=transform)
    summary = run_change_detection(t1, t2, (PointwiseModel().eval(), make_card()),
                                   _outputs(tmp_path / "out", "change_mask"), RunOptions(tile_size=64))
    pixel_area = summary.changed_area_m2 / max(1, summary.changed_pixels)
    assert 55 < pixel_area < 70  # 11.1 m x 5.57 m = 62 m²


def test_default_tile_is_the_cards_but_at_least_256_px(tmp_path: Path, scene_pair) -> None:
    t1, t2, _ = scene_pair  # 200 x 150 px
    model, card = PointwiseModel().eval(), make_card(tile_size=64)
    default = run_change_detection(t1, t2, (model, card), _outputs(tmp_path / "default", "change_mask"))
    assert (default.tile_size, default.overlap, default.tiles_total) == (256, 64, 1)
    chosen = run_change_detection(t1, t2, (model, card), _outputs(tmp_path / "chosen", "change_mask"),
                                  RunOptions(tile_size=64))
    assert (chosen.tile_size, chosen.overlap) == (64, 16) and chosen.tiles_total > 1


def test_raster_smaller_than_a_tile_and_16_bit_input(tmp_path: Path) -> None:
    scene = synthetic.make_scene(40, 50, 6, seed=9)
    image1 = synthetic.render(scene.labels_t1, PALETTE).astype(np.uint16) * 40
    image2 = synthetic.render(scene.labels_t2, PALETTE, seed=3).astype(np.uint16) * 40
    t1 = synthetic.write_geotiff(tmp_path / "t1.tif", image1)
    t2 = synthetic.write_geotiff(tmp_path / "t2.tif", image2)
    out = _outputs(tmp_path / "out", "fromto", "change_mask")
    summary = run_change_detection(t1, t2, (PointwiseModel().eval(), make_card(tile_size=256)), out)
    assert summary.tiles_total == 1
    assert "percentile" in summary.scaling_t1
    mask = read_band(Path(out.change_mask))
    assert mask.shape == (40, 50)
    assert set(np.unique(mask)) <= {0, 1}


def test_threshold_map_is_applied(tmp_path: Path, scene_pair) -> None:
    t1, t2, _ = scene_pair
    out_plain = _outputs(tmp_path / "plain", "change_mask", "change_prob")
    out_thr = _outputs(tmp_path / "thr", "change_mask")
    run_change_detection(t1, t2, (PointwiseModel().eval(), make_card()), out_plain, RunOptions(tile_size=64))
    run_change_detection(t1, t2, (PointwiseModel(threshold=True).eval(), make_card()), out_thr,
                         RunOptions(tile_size=64))
    prob = read_band(Path(out_plain.change_prob))
    expected = (prob > 0.6).astype(np.uint8)
    np.testing.assert_array_equal(read_band(Path(out_thr.change_mask)), expected)


def test_tiles_without_valid_pixels_are_skipped(tmp_path: Path) -> None:
    scene = synthetic.make_scene(128, 256, 6, seed=1)
    image1 = synthetic.render(scene.labels_t1, PALETTE)
    image2 = synthetic.render(scene.labels_t2, PALETTE, seed=5)
    image2[:, :, 128:] = 0
    t1 = synthetic.write_geotiff(tmp_path / "t1.tif", image1)
    t2 = synthetic.write_geotiff(tmp_path / "t2.tif", image2, nodata=0)
    out = _outputs(tmp_path / "out", "fromto")
    summary = run_change_detection(t1, t2, (PointwiseModel().eval(), make_card()), out,
                                   RunOptions(tile_size=64, overlap=0))
    assert summary.tiles_skipped == 4
    assert np.all(read_band(Path(out.fromto))[:, 128:] == 255)


def test_progress_is_reported_and_cancel_leaves_nothing(tmp_path: Path, scene_pair, pointwise) -> None:
    t1, t2, _ = scene_pair

    class Recorder(Progress):
        def __init__(self, cancel_after: int | None) -> None:
            self.values: list[float] = []
            self.cancel_after = cancel_after

        def set_progress(self, fraction: float) -> None:
            self.values.append(fraction)

        def is_cancelled(self) -> bool:
            return self.cancel_after is not None and len(self.values) >= self.cancel_after

    recorder = Recorder(None)
    run_change_detection(t1, t2, pointwise, _outputs(tmp_path / "ok", "fromto"),
                         RunOptions(tile_size=64, batch_size=2), recorder)
    assert recorder.values == sorted(recorder.values) and recorder.values[-1] == 1.0
    folder = tmp_path / "cancelled"
    out = _outputs(folder, "fromto", "change_prob", "transitions_csv")
    with pytest.raises(Cancelled):
        run_change_detection(t1, t2, pointwise, out, RunOptions(tile_size=64, batch_size=2, prefetch_batches=2),
                             Recorder(2))
    assert _finished_files(folder) == []
    assert threading.active_count() < 5  # the reader thread is gone


def _state(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file of ``folder`` (hidden ones too) with its inode, modification time and bytes."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("step", ["vectorising change patches", "polygons:"])
def test_a_cancelled_rerun_leaves_the_earlier_runs_outputs_exactly_as_they_were(tmp_path: Path, scene_pair, pointwise,
                                                                                step: str) -> None:
    # the products stage used to publish the CSV before polygonising: a cancel there left the new CSV beside the
    # earlier run's maps, though the log said "no output was written"
    t1, t2, _ = scene_pair
    folder = tmp_path / "out"
    out = OutputPaths(**vars(_outputs(folder, "fromto", "change_mask", "transitions_csv")) | {
        "polygons": folder / "changes.gpkg"})
    run_change_detection(t1, t2, pointwise, out, RunOptions(tile_size=64))
    before = _state(folder)
    assert sorted(before) == ["change_mask.qml", "change_mask.tif", "change_mask.tif.aux.xml", "changes.gpkg",
                              "fromto.qml", "fromto.tif", "fromto.tif.aux.xml", "transitions.csv"]

    class CancelAt(Progress):
        """Cancels once the run logs ``step`` (while the polygons are written, or just after)."""

        def __init__(self) -> None:
            self.cancelled = False

        def info(self, message: str) -> None:
            self.cancelled = self.cancelled or message.startswith(step)

        def is_cancelled(self) -> bool:
            return self.cancelled

    with pytest.raises(Cancelled, match="no output was written"):
        run_change_detection(t1, t2, pointwise, out, RunOptions(tile_size=64, min_patch_pixels=4, overwrite=True),
                             CancelAt())
    assert _state(folder) == before


# --- refusals: each says what is wrong and leaves nothing behind ------------------------------


def test_rasters_that_do_not_overlap_are_refused(tmp_path: Path, pointwise) -> None:
    image = synthetic.render(synthetic.make_scene(64, 64, 6).labels_t1, PALETTE)
    t1 = synthetic.write_geotiff(tmp_path / "t1.tif", image)
    t2 = synthetic.write_geotiff(tmp_path / "t2.tif", image, transform=Affine(1, 0, 900000.0, 0, -1, 5000000.0))
    out = _outputs(tmp_path / "out", "fromto")
    with pytest.raises(InputError, match="do not overlap"):
        run_change_detection(t1, t2, pointwise, out)
    assert _finished_files(tmp_path / "out") == []


@pytest.mark.parametrize(("bands", "message"), [((1, 2, 4), "band 4"), ((0, 1, 2), "band 0"), ((1, 2), "exactly 3")])
def test_bad_band_choices_are_refused(tmp_path: Path, scene_pair, pointwise, bands, message) -> None:
    t1, t2, _ = scene_pair
    with pytest.raises(InputError, match=message):
        run_change_detection(t1, t2, pointwise, _outputs(tmp_path / "out", "fromto"), RunOptions(bands_t2=bands))
    assert _finished_files(tmp_path / "out") == []


def test_too_few_bands_is_refused(tmp_path: Path, pointwise) -> None:
    gray = synthetic.make_scene(64, 64, 6).labels_t1[None] * 20
    t1 = synthetic.write_geotiff(tmp_path / "t1.tif", gray)
    t2 = synthetic.write_geotiff(tmp_path / "t2.tif", gray)
    with pytest.raises(InputError, match="too few"):
        run_change_detection(t1, t2, pointwise, _outputs(tmp_path / "out", "fromto"))


def test_missing_and_unreadable_files_are_refused(tmp_path: Path, scene_pair, pointwise) -> None:
    t1, _, _ = scene_pair
    with pytest.raises(InputError, match="not found"):
        run_change_detection(t1, tmp_path / "nope.tif", pointwise, _outputs(tmp_path / "out", "fromto"))
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a raster at all")
    with pytest.raises(InputError, match="cannot read"):
        run_change_detection(junk, t1, pointwise, _outputs(tmp_path / "out", "fromto"))


def test_all_nodata_intersection_is_refused(tmp_path: Path, pointwise) -> None:
    image = synthetic.render(synthetic.make_scene(64, 64, 6).labels_t1, PALETTE)
    t1 = synthetic.write_geotiff(tmp_path / "t1.tif", image)
    t2 = synthetic.write_geotiff(tmp_path / "t2.tif", np.zeros_like(image), nodata=0)
    with pytest.raises(InputError, match="no valid pixel"):
        run_change_detection(t1, t2, pointwise, _outputs(tmp_path / "out", "fromto"))
    assert _finished_files(tmp_path / "out") == []


@pytest.mark.parametrize(("tile", "overlap", "message"), [(64, 64, "overlap"), (8, 0, "tile size")])
def test_tile_and_overlap_out_of_range_are_refused(tmp_path: Path, scene_pair, pointwise, tile, overlap,
                                                   message) -> None:
    t1, t2, _ = scene_pair
    with pytest.raises(InputError, match=message):
        run_change_detection(t1, t2, pointwise, _outputs(tmp_path / "out", "fromto"),
                             RunOptions(tile_size=tile, overlap=overlap))


def test_unwritable_output_folder_is_refused_before_any_work(tmp_path: Path, scene_pair, pointwise) -> None:
    t1, t2, _ = scene_pair
    with pytest.raises(InputError, match="does not exist"):
        run_change_detection(t1, t2, pointwise, OutputPaths(fromto=tmp_path / "missing" / "x.tif"))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        import os

        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(InputError, match="not writable"):
            run_change_detection(t1, t2, pointwise, OutputPaths(fromto=locked / "x.tif"))
    finally:
        locked.chmod(0o700)


def test_binary_model_cannot_write_semantic_products(tmp_path: Path, scene_pair) -> None:
    t1, t2, _ = scene_pair
    with pytest.raises(InputError, match="binary change only"):
        run_change_detection(t1, t2, (LocalConvModel().eval(), make_card("binary")),
                             _outputs(tmp_path / "out", "fromto"))


def test_failure_midway_leaves_no_finished_looking_output(tmp_path: Path, scene_pair) -> None:
    t1, t2, _ = scene_pair

    class Exploding(PointwiseModel):
        calls = 0

        def predict(self, x1, x2):
            Exploding.calls += 1
            if Exploding.calls > 2:
                raise RuntimeError("boom")
            return super().predict(x1, x2)

    folder = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        run_change_detection(t1, t2, (Exploding().eval(), make_card()), _outputs(folder, "fromto", "change_prob"),
                             RunOptions(tile_size=64, batch_size=1, prefetch_batches=2))
    assert _finished_files(folder) == []


def test_alpha_transparency_and_nan_make_nodata(tmp_path: Path) -> None:
    scene = synthetic.make_scene(96, 96, 6, seed=4)
    rgb1 = synthetic.render(scene.labels_t1, PALETTE)
    alpha = np.full((1, 96, 96), 255, dtype=np.uint8)
    alpha[:, :20, :] = 0  # top rows transparent in T1
    t1 = tmp_path / "t1_rgba.tif"
    with rasterio.open(t1, "w", driver="GTiff", width=96, height=96, count=4, dtype="uint8", crs="EPSG:32633",
                       transform=Affine(1, 0, 500000.0, 0, -1, 5000000.0), photometric="RGB",
                       alpha="YES") as dst:
        dst.write(np.concatenate([rgb1, alpha]))
    image2 = synthetic.render(scene.labels_t2, PALETTE, seed=8).astype(np.float32)
    image2[1, 50:60, 50:60] = np.nan  # NaN in one band of T2
    t2 = synthetic.write_geotiff(tmp_path / "t2.tif", image2, dtype="float32")
    out = _outputs(tmp_path / "out", "fromto")
    summary = run_change_detection(t1, t2, (PointwiseModel().eval(), make_card()), out, RunOptions(tile_size=64))
    codes = read_band(Path(out.fromto))
    assert np.all(codes[:20] == 255)
    assert np.all(codes[50:60, 50:60] == 255)
    assert np.all(codes[20:50] != 255)
    assert summary.valid_pixels == 96 * 96 - 20 * 96 - 100


@pytest.mark.parametrize("model_name", ["gapl_scd", "lsafnet", "sscfnet", "cldrnet"])
def test_every_network_runs_through_the_engine_from_an_init_checkpoint(tmp_path: Path, model_name: str) -> None:
    from core.models.registry import get_spec
    from training_cli.cli import main as cli

    semantic = get_spec(model_name).task == "semantic"
    checkpoint = tmp_path / f"{model_name}.pt"
    preset = "second" if semantic else "binary"
    assert cli(["init", "--model", model_name, "--preset", preset, "--tile-size", "64", "--out", str(checkpoint)]) == 0
    t1, t2_utm, _ = synthetic.write_pair(tmp_path / "in", PALETTE, height=96, width=80, seed=11)
    t2 = synthetic.reproject_geotiff(t2_utm, tmp_path / "in" / "t2_3857.tif", "EPSG:3857")
    names = ("fromto", "change_prob") if semantic else ("change_mask", "change_prob")
    out = _outputs(tmp_path / "out", *names)
    summary = run_change_detection(t1, t2, checkpoint, out, RunOptions(tile_size=64, batch_size=2, overlap=16))
    assert summary.tiles_run == summary.tiles_total == 4
    with rasterio.open(t1) as src, rasterio.open(summary.outputs[names[0]]) as dst:
        assert dst.crs == src.crs and dst.res == src.res
        values = dst.read(1)
    limit = 36 if semantic else 1
    assert values[values != 255].max() <= limit
    prob = read_band(Path(out.change_prob))
    assert prob[prob != -1].min() >= 0 and prob.max() <= 1


def _patch_sizes(mask: np.ndarray) -> list[float]:
    """Pixel counts of the 8-connected patches of ``mask`` (polygon areas on a 1-pixel grid)."""
    from rasterio.features import shapes

    def ring_area(ring: list) -> float:
        xy = np.asarray(ring)
        return abs(float(np.dot(xy[:-1, 0], xy[1:, 1]) - np.dot(xy[1:, 0], xy[:-1, 1]))) / 2

    return [ring_area(geom["coordinates"][0]) - sum(ring_area(h) for h in geom["coordinates"][1:])
            for geom, _ in shapes(mask.astype(np.uint8), mask=mask, connectivity=8)]


def test_minimum_mapping_unit_removes_small_change_patches_everywhere(tmp_path: Path, scene_pair) -> None:
    t1, t2, _ = scene_pair
    model = (PointwiseModel().eval(), make_card())
    names = ("fromto", "t1_classes", "change_mask", "transitions_csv")
    raw = run_change_detection(t1, t2, model, _outputs(tmp_path / "raw", *names), RunOptions(tile_size=64))
    sieved = run_change_detection(t1, t2, model, _outputs(tmp_path / "sieved", *names),
                                  RunOptions(tile_size=64, min_patch_pixels=40))
    codes = read_band(tmp_path / "sieved/fromto.tif")
    changed = (codes != 0) & (codes != 255)
    assert min(_patch_sizes(read_band(tmp_path / "raw/fromto.tif") % 255 > 0)) < 40  # there was something to remove
    assert min(_patch_sizes(changed)) >= 40
    assert sieved.changed_pixels == int(changed.sum()) < raw.changed_pixels
    np.testing.assert_array_equal(read_band(tmp_path / "sieved/change_mask.tif") == 1, changed)
    classes = read_band(tmp_path / "sieved/t1_classes.tif")
    np.testing.assert_array_equal((classes != 0) & (classes != 255), changed)
    assert _finished_files(tmp_path / "sieved") == sorted([
        "change_mask.qml", "change_mask.tif", "change_mask.tif.aux.xml", "fromto.qml", "fromto.tif",
        "fromto.tif.aux.xml", "t1_classes.qml", "t1_classes.tif", "t1_classes.tif.aux.xml", "transitions.csv"])


def test_minimum_mapping_unit_without_a_change_raster_publishes_only_what_was_asked(tmp_path: Path,
                                                                                     scene_pair) -> None:
    t1, t2, _ = scene_pair
    summary = run_change_detection(t1, t2, (PointwiseModel().eval(), make_card()),
                                   _outputs(tmp_path / "out", "t2_classes"), RunOptions(min_patch_pixels=40))
    classes = read_band(tmp_path / "out/t2_classes.tif")
    changed = (classes != 0) & (classes != 255)
    assert min(_patch_sizes(changed)) >= 40
    assert summary.changed_pixels == int(changed.sum())
    assert [p for p in _finished_files(tmp_path / "out") if p.endswith(".tif")] == ["t2_classes.tif"]


def test_t2_on_the_same_grid_with_an_offset_is_read_without_warping(tmp_path: Path) -> None:
    from core.io import RasterPair

    scene = synthetic.make_scene(64, 64, 6, seed=6)
    image1 = synthetic.render(scene.labels_t1, PALETTE)
    image2 = synthetic.render(scene.labels_t2, PALETTE, seed=2)
    t1 = synthetic.write_geotiff(tmp_path / "t1.tif", image1[:, :, :48])
    shifted = Affine(1.0, 0.0, 500016.0, 0.0, -1.0, 5000000.0)  # starts 16 px to the right of T1
    t2 = synthetic.write_geotiff(tmp_path / "t2.tif", image2[:, :, 16:], transform=shifted)
    with RasterPair(t1, t2, (1, 2, 3), (1, 2, 3), needed_bands=3) as pair:
        assert pair._vrt2 is None  # no warping for an aligned grid
        assert (pair.width, pair.height) == (32, 64)
        img1, img2, valid = pair.read(0, 0, 64, 32)
    np.testing.assert_array_equal(img1, image1[:, :, 16:48])
    np.testing.assert_array_equal(img2, image2[:, :, 16:48])
    assert valid.all()


def test_transition_matrix_alone_with_a_minimum_mapping_unit(tmp_path: Path, scene_pair, monkeypatch) -> None:
    t1, t2, _ = scene_pair
    monkeypatch.chdir(tmp_path)  # nothing may land in the working folder
    out = _outputs(tmp_path / "out", "transitions_csv")
    summary = run_change_detection(t1, t2, (PointwiseModel().eval(), make_card()), out,
                                   RunOptions(tile_size=64, min_patch_pixels=40))
    assert _finished_files(tmp_path / "out") == ["transitions.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]
    total_changed = sum(row.pixels for row in summary.transitions if row.value != 0)
    assert total_changed == summary.changed_pixels


def test_a_network_whose_outputs_differ_from_its_declaration_is_refused(tmp_path: Path, scene_pair) -> None:
    """The channel layout is fixed before the run from ``learns_threshold``; a network that breaks it is named."""
    t1, t2, _ = scene_pair
    network = PointwiseModel(threshold=True).eval()
    network.learns_threshold = False  # returns change_threshold without saying so
    with pytest.raises(ChangeDetectionError, match="learns_threshold"):
        run_change_detection(t1, t2, (network, make_card()), _outputs(tmp_path / "out", "fromto"),
                             RunOptions(tile_size=64))
    assert _finished_files(tmp_path / "out") == []
