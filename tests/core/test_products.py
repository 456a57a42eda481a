"""The products stage on its own: rows in, every requested product out, counted and legended once."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from core.errors import InputError
from core.models.card import LandCoverClass
from core.product_table import BY_NAME, PRODUCTS, products_for
from core.products import Grid, Legends, ProductsStage, check_outputs

CLASSES = (LandCoverClass("Water", (0, 0, 255)), LandCoverClass("Forest", (0, 128, 0)),
           LandCoverClass("Town", (255, 0, 0)))


def grid(width: int = 8, height: int = 6) -> Grid:
    return Grid(width, height, rasterio.crs.CRS.from_epsg(32633), from_origin(0, 60, 10, 10),
                lambda rows: np.full(np.shape(rows), 100.0))


def test_the_table_names_each_product_once_and_every_task_has_products() -> None:
    assert len({p.name for p in PRODUCTS}) == len({p.parameter for p in PRODUCTS}) == len(PRODUCTS)
    assert {p.name for p in products_for("binary")} == {"change_mask", "change_prob", "polygons"}
    assert "change_prob" not in {p.name for p in products_for("compare")}
    assert BY_NAME["t1_classes"].title("compare") != BY_NAME["t1_classes"].title("semantic")


def test_rows_in_two_bands_give_codes_matrix_and_a_present_only_legend(tmp_path: Path) -> None:
    outputs = {"fromto": tmp_path / "f.tif", "t2_classes": tmp_path / "c2.tif", "transitions_csv": tmp_path / "m.csv"}
    stage = ProductsStage(grid(), Legends("compare", CLASSES, classes_inside_change_only=False, present_only=True),
                          outputs)
    c1 = np.ones((6, 8), np.uint8)
    c2 = c1.copy()
    c2[:2, :3] = 3  # Water -> Town, 6 px
    valid = np.ones((6, 8), bool)
    valid[5, 7] = False
    for start in (0, 3):
        rows = slice(start, start + 3)
        stage.write_rows(start, valid[rows], c1[rows] != c2[rows], c1=c1[rows], c2=c2[rows])
    result = stage.finish()
    assert result.changed_pixels == 6 and result.valid_pixels == 47
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c2.qml", "c2.tif", "c2.tif.aux.xml", "f.qml", "f.tif",
                                                          "f.tif.aux.xml", "m.csv"]
    with rasterio.open(tmp_path / "f.tif") as src:
        codes = src.read(1)
    assert codes[0, 0] == 1 + 0 * 3 + 2 and codes[5, 7] == src.nodata and (codes == 0).sum() == 41
    rows = list(csv.reader(io.StringIO((tmp_path / "m.csv").read_text(encoding="utf-8"))))
    assert rows[1] == ["pixels", "Water", "41", "0", "6", "47"]  # persistence on the diagonal
    assert (tmp_path / "f.qml").read_text(encoding="utf-8").count("paletteEntry") == 2  # No change + the one pair
    assert [r.label for r in result.transitions] == ["No change", "Water -> Town"]


def test_refusals_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no output was requested"):
        check_outputs({"fromto": None}, "compare", lambda names: "", inputs={})
    with pytest.raises(InputError, match="same file name"):
        check_outputs({"fromto": tmp_path / "a.tif", "change_mask": tmp_path / "a.tif"}, "compare", lambda n: "",
                      inputs={})
    with pytest.raises(InputError, match="cannot: change_prob"):
        check_outputs({"change_prob": tmp_path / "p.tif"}, "compare", lambda names: f"cannot: {', '.join(names)}",
                      inputs={})
    with pytest.raises(InputError, match=r"no vector format for .\.xyz"):
        check_outputs({"polygons": tmp_path / "p.xyz"}, "compare", lambda names: "", inputs={})
    t1 = tmp_path / "t1.tif"
    t1.write_bytes(b"the user's own map")
    with pytest.raises(InputError, match="T1"):
        check_outputs({"fromto": t1}, "compare", lambda names: "", inputs={"T1": t1})
    assert t1.read_bytes() == b"the user's own map"
