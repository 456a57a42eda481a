"""``prepare``: cut a user's own two dates and label raster(s) into a training set.

T2 is aligned onto T1's grid by the engine's own reader (:class:`core.io.RasterPair`,
the same warping the plugin applies at inference), labels are warped onto the
same grid with nearest-neighbour resampling, and the area both dates cover is
cut into non-overlapping tiles. Tiles that are mostly nodata (in either date or the labels) are skipped. The
split is by spatial blocks of tiles: every block of ``--block x --block`` tiles
goes wholly to train, val or test, so neighbouring tiles (which look alike)
rarely end up on both sides of a split, and no pixel is in two tiles.

Images that are not 8-bit are stretched to 8-bit with the per-band 2-98 %
percentiles of the whole scene, which is what the engine does to non-8-bit
input with a default model card, so training and inference see the same values.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InputError
from core.io import RasterPair, Window, dataset_mask, gdal_session, open_raster, read_bands, warp_onto
from core.models.card import InputScaling
from core.preprocess import BandScaling, plan_scaling
from core.synthetic import LAYOUT_FOLDERS
from training_cli.datasets import CLASSES
from training_cli.outputs import staged_folder

NAME = "prepare"

_EXAMPLES = """\
examples:
  # two dates and a change mask (0/1 or 0/255) -> binary layout, 256 px tiles
  python -m training_cli prepare --t1 2019.tif --t2 2023.tif --labels change.tif --out my-cd --tile 256
  # land cover of both dates (classes 1..6 in SECOND's order) -> SECOND layout
  python -m training_cli prepare --t1 2019.tif --t2 2023.tif --labels lc2019.tif --labels-t2 lc2023.tif \\
      --out my-scd --tile 512 --split 0.7,0.15,0.15
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Declare ``prepare`` and its options."""
    parser = subparsers.add_parser(
        NAME,
        help="cut your own two dates and labels into a training set (SECOND or binary layout)",
        description=(
            "Align T2 onto T1 (the engine's own warping), warp the label raster(s) onto the same grid, cut the "
            "common area into non-overlapping tiles, skip mostly-nodata tiles and split train/val/test by "
            "spatial blocks. With --labels alone the labels are a change mask (0/1 or 0/255) and the "
            "binary layout is written; with --labels and --labels-t2 they are the land cover of each date "
            "(classes 1..N of --classes, 0 = unlabelled) and the SECOND layout is written, with the class of "
            "each date inside change and 'no change' elsewhere."
        ),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--t1", required=True, type=Path, metavar="FILE", help="first date (its grid is kept)")
    parser.add_argument("--t2", required=True, type=Path, metavar="FILE", help="second date (any CRS/resolution)")
    parser.add_argument("--labels", required=True, type=Path, metavar="FILE",
                        help="change mask, or T1 land cover when --labels-t2 is given")
    parser.add_argument("--labels-t2", type=Path, metavar="FILE", help="T2 land cover (semantic training set)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="new folder to write")
    parser.add_argument("--tile", type=int, default=512, metavar="N", help="tile size in pixels (default 512)")
    parser.add_argument("--split", default="0.7,0.15,0.15", metavar="TRAIN,VAL,TEST",
                        help="shares of tiles per split (default 0.7,0.15,0.15)")
    parser.add_argument("--block", type=int, default=4, metavar="N",
                        help="a split block is N x N tiles (default 4)")
    parser.add_argument("--min-valid", type=float, default=0.5, metavar="F",
                        help="skip tiles with less than this share of valid pixels (default 0.5)")
    parser.add_argument("--classes", default="second", choices=("second", "landsat-scd"),
                        help="class list of semantic labels (default second: 1 water ... 6 playground)")
    parser.add_argument("--bands-t1", default="1,2,3", metavar="B,B,B", help="T1 bands in RGB order")
    parser.add_argument("--bands-t2", default="1,2,3", metavar="B,B,B", help="T2 bands in RGB order")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the block assignment")
    return parser


def _parse_shares(text: str) -> tuple[float, float, float]:
    try:
        shares = tuple(float(v) for v in text.split(","))
    except ValueError:
        shares = ()
    if len(shares) != 3 or any(s < 0 for s in shares) or not math.isclose(sum(shares), 1.0, abs_tol=1e-6):
        raise InputError(f"--split needs three non-negative shares that sum to 1, e.g. 0.7,0.15,0.15; got {text!r}")
    return shares  # type: ignore[return-value]


def _parse_bands(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{option} needs band numbers like 1,2,3; got {text!r}") from None


class _Labels:
    """A label raster warped (nearest neighbour) onto the processing grid of a :class:`RasterPair`."""

    def __init__(self, path: Path, pair: RasterPair) -> None:
        self.path = path
        self._src = open_raster(path)
        if self._src.crs is None:
            self._src.close()
            raise InputError(f"{path} has no coordinate reference system, so it cannot be placed on the images; "
                             "assign its CRS and run again")
        self._vrt = warp_onto(self._src, pair.crs, pair.transform, pair.width, pair.height, nearest=True,
                              add_alpha=self._src.nodata is None)

    def read(self, row: int, col: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        window = Window(col, row, size, size)
        with gdal_session():
            values = read_bands(self._vrt, (1,), window)[0]
            valid = dataset_mask(self._vrt, window) > 0
        return values.astype(np.int64), valid

    def close(self) -> None:
        self._vrt.close()
        self._src.close()


def _to_8bit(image: np.ndarray, valid: np.ndarray, scaling: BandScaling) -> np.ndarray:
    scaled = scaling.apply(image.copy())  # mean 0 / std 1 in the plan below: just the 0..255 stretch
    scaled = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    scaled[:, ~valid] = 0
    return scaled


def assign_blocks(tiles: list[tuple[int, int]], block: int, shares: tuple[float, float, float],
                  seed: int) -> dict[tuple[int, int], str]:
    """Split name per tile (grid row, grid column): whole blocks of tiles go to one split.

    Blocks are shuffled with ``seed`` and taken in order until each split has its share of the tiles.
    """
    blocks: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for tile in tiles:
        blocks.setdefault((tile[0] // block, tile[1] // block), []).append(tile)
    order = sorted(blocks)
    np.random.default_rng(seed).shuffle(order)
    total = len(tiles)
    bounds = (shares[0] * total, (shares[0] + shares[1]) * total)
    result: dict[tuple[int, int], str] = {}
    taken = 0
    for key in order:
        members = blocks[key]
        middle = taken + len(members) / 2
        split = "train" if middle <= bounds[0] else "val" if middle <= bounds[1] else "test"
        for tile in members:
            result[tile] = split
        taken += len(members)
    return result


def run(args: argparse.Namespace) -> int:
    """Cut, check and write the tiles."""
    shares = _parse_shares(args.split)
    if args.tile < 32 or args.block < 1 or not 0 <= args.min_valid <= 1:
        raise InputError("--tile must be >= 32, --block >= 1 and --min-valid between 0 and 1")
    semantic = args.labels_t2 is not None
    format = "second" if semantic else "binary"
    classes = CLASSES[args.classes] if semantic else ()
    palette = np.asarray([(255, 255, 255), *(c.color for c in classes)], np.uint8)
    for path in (args.t1, args.t2, args.labels, *([args.labels_t2] if semantic else [])):
        if Path(path).resolve().is_relative_to(args.out.resolve()):
            raise InputError(f"{path} lies inside --out {args.out}; choose an output folder of its own")
    pair = RasterPair(args.t1, args.t2, _parse_bands(args.bands_t1, "--bands-t1"),
                      _parse_bands(args.bands_t2, "--bands-t2"), needed_bands=3)
    label_views: list[_Labels] = []
    try:
        label_views.append(_Labels(args.labels, pair))
        if semantic:
            label_views.append(_Labels(args.labels_t2, pair))
        scalings = _plan_8bit(pair)
        rows, cols = pair.height // args.tile, pair.width // args.tile
        if rows == 0 or cols == 0:
            raise InputError(f"the area both dates cover is {pair.width} x {pair.height} px, smaller than one "
                             f"--tile {args.tile}; choose a smaller tile")
        with staged_folder(args.out) as staging:
            written = _write_tiles(args, pair, label_views, scalings, staging, rows, cols, shares, format,
                                   palette)
    finally:
        for view in label_views:
            view.close()
        pair.close()
    counts = {split: sum(1 for row in written if row["split"] == split) for split in ("train", "val", "test")}
    print(f"wrote {args.out}: {format} layout, {len(written)} tiles of {args.tile} px "
          f"({counts['train']} train, {counts['val']} val, {counts['test']} test) from a {rows} x {cols} grid")
    skipped = rows * cols - len(written)
    if skipped:
        print(f"  skipped {skipped} tiles with less than {args.min_valid:.0%} valid pixels")
    dropped_w, dropped_h = pair.width - cols * args.tile, pair.height - rows * args.tile
    if dropped_w or dropped_h:
        print(f"  the last {dropped_w} columns and {dropped_h} rows do not fill a tile and are left out")
    return 0


def _plan_8bit(pair: RasterPair) -> tuple[BandScaling, BandScaling]:
    dtypes = pair.dtypes()
    sample1, sample2, valid = pair.sample()
    zero, one = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return (plan_scaling(dtypes[0], sample1, valid, InputScaling(), zero, one),
            plan_scaling(dtypes[1], sample2, valid, InputScaling(), zero, one))


def _write_tiles(args: argparse.Namespace, pair: RasterPair, label_views: list[_Labels],
                 scalings: tuple[BandScaling, BandScaling], staging: Path, rows: int, cols: int,
                 shares: tuple[float, float, float], format: str, palette: np.ndarray) -> list[dict[str, Any]]:
    from PIL import Image

    tile = args.tile
    folders = LAYOUT_FOLDERS[format]
    kept: list[tuple[int, int, float]] = []
    for grid_row in range(rows):
        for grid_col in range(cols):
            _, _, valid = pair.read(grid_row * tile, grid_col * tile, tile, tile)
            for view in label_views:  # outside a label's footprint there is no truth either
                valid &= view.read(grid_row * tile, grid_col * tile, tile)[1]
            fraction = float(valid.mean())
            if fraction >= args.min_valid and fraction > 0:
                kept.append((grid_row, grid_col, fraction))
    if not kept:
        raise InputError(f"every tile has less than {args.min_valid:.0%} valid pixels; check the nodata of the "
                         "inputs or lower --min-valid")
    splits = assign_blocks([(r, c) for r, c, _ in kept], args.block, shares, args.seed)
    records = []
    for grid_row, grid_col, _ in kept:
        row, col = grid_row * tile, grid_col * tile
        image1, image2, valid = pair.read(row, col, tile, tile)
        labels = []
        for view in label_views:
            values, label_valid = view.read(row, col, tile)
            labels.append((values, label_valid))
        split = splits[(grid_row, grid_col)]
        name = f"r{row:06d}_c{col:06d}.png"
        base = staging / split
        for folder, image, scaling in ((folders[0], image1, scalings[0]), (folders[1], image2, scalings[1])):
            (base / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(_to_8bit(image, valid, scaling).transpose(1, 2, 0)).save(base / folder / name)
        label_valid = valid & np.logical_and.reduce([v for _, v in labels])
        if format == "binary":
            change = _binary_values(labels[0][0], label_valid, label_views[0].path)
            _save(base / folders[2] / name, (change * 255).astype(np.uint8))
            changed_fraction = float(change.mean())
        else:
            c1, c2 = (_class_values(values, label_valid, view.path, len(palette) - 1)
                      for (values, _), view in zip(labels, label_views, strict=True))
            changed = (c1 != c2) & (c1 > 0) & (c2 > 0)
            _save(base / folders[2] / name, palette[np.where(changed, c1, 0)])
            _save(base / folders[3] / name, palette[np.where(changed, c2, 0)])
            changed_fraction = float(changed.mean())
        x, y = pair.transform * (col, row)
        records.append({"name": name, "split": split, "row": row, "col": col, "x": x, "y": y,
                        "valid": round(float(label_valid.mean()), 4), "changed": round(changed_fraction, 4)})
    with open(staging / "tiles.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    (staging / "prepare.json").write_text(json.dumps({
        "format": format, "t1": str(args.t1), "t2": str(args.t2), "labels": str(args.labels),
        "labels_t2": str(args.labels_t2) if args.labels_t2 else None, "tile": tile, "block": args.block,
        "split": list(shares), "seed": args.seed, "min_valid": args.min_valid,
        "classes": args.classes if format == "second" else None,
        "crs": pair.crs.to_string(), "transform": list(pair.transform)[:6],
        "scaling_t1": scalings[0].description, "scaling_t2": scalings[1].description,
    }, indent=2), encoding="utf-8")
    return records


def _save(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path)


def _binary_values(values: np.ndarray, valid: np.ndarray, path: Path) -> np.ndarray:
    present = set(np.unique(values[valid]).tolist())
    if not present <= {0, 1} and not present <= {0, 255}:
        odd = sorted(present - {0, 1, 255})[:5] or sorted(present)
        raise InputError(f"{path}: a change mask must hold 0 (unchanged) and 1 or 255 (changed), found {odd}")
    return ((values > 0) & valid).astype(np.uint8)


def _class_values(values: np.ndarray, valid: np.ndarray, path: Path, num_classes: int) -> np.ndarray:
    inside = values[valid]
    if inside.size and (inside.min() < 0 or inside.max() > num_classes):
        odd = sorted(set(np.unique(inside).tolist()) - set(range(num_classes + 1)))[:5]
        raise InputError(f"{path}: land-cover values must be 1..{num_classes} (0 = unlabelled), found {odd}")
    return np.where(valid, values, 0)
