"""``prepare``: cut a user's own two dates and label raster(s) into a training set.

T2 is aligned onto T1's grid by the engine's own reader (:class:`core.io.RasterPair`,
the same warping the plugin applies at inference), labels are warped onto the
same grid with nearest-neighbour resampling, and the area both dates cover is
cut into non-overlapping tiles. Tiles that are mostly nodata (in either date or the labels) are skipped. The
split is by spatial blocks of tiles: every block of ``--block x --block`` tiles
goes wholly to train, val or test, so neighbouring tiles (which look alike)
rarely end up on both sides of a split, and no pixel is in two tiles.

Bands: any number N >= 1 per date (``--bands-t1 4,3,2,8``), the same N for both
dates. Three 8-bit bands are written as PNG pictures; anything else (other band
counts, uint16 or float reflectance) as GeoTIFF tiles that keep the imagery's own
values and the file's declared scale and offset: nothing is stretched or divided
by 255. Per-band statistics of each date are computed on the training split's valid
pixels and recorded in ``prepare.json``; ``train`` puts them, the band numbers and
the scaling rule in the model card, so the engine scales a scene exactly as the
network saw its training tiles.
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
from core.io import (
    RasterPair,
    Window,
    dataset_mask,
    gdal_session,
    open_raster,
    read_bands,
    warp_onto,
    write_array,
)
from core.models.card import InputScaling
from core.preprocess import plan_scaling
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
    parser.add_argument("--bands-t1", metavar="B,B,...",
                        help="T1 bands in the order the model takes them, any number, e.g. 4,3,2,8 (default: every "
                             "band of T1 that is not alpha)")
    parser.add_argument("--bands-t2", metavar="B,B,...",
                        help="T2 bands in the same order, as many as T1's (default: the numbers of --bands-t1, or "
                             "every band of T2 that is not alpha)")
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
        bands = tuple(int(v) for v in text.split(","))
    except ValueError:
        bands = ()
    if not bands or min(bands) < 1:
        raise InputError(f"{option} needs band numbers from 1 up, separated by commas, like 4,3,2,8; got {text!r}")
    return bands


def choose_bands(t1: Path, t2: Path, bands_t1: str | None, bands_t2: str | None) -> tuple[tuple[int, ...],
                                                                                         tuple[int, ...]]:
    """The bands of each date: as given, or by default every band that is not alpha; the same count for both.

    Raises:
        InputError: The dates get different band counts (the message names both counts and both files), or a
            band list is not numbers.
    """
    first = _parse_bands(bands_t1, "--bands-t1") if bands_t1 else _image_bands(t1)
    second = first if bands_t1 and not bands_t2 else (
        _parse_bands(bands_t2, "--bands-t2") if bands_t2 else _image_bands(t2))
    if len(first) != len(second):
        given = "--bands-t1/--bands-t2 name" if bands_t1 or bands_t2 else "the files have"
        raise InputError(f"{given} {len(first)} bands for T1 ({t1}: {_listed(first)}) but {len(second)} for T2 "
                         f"({t2}: {_listed(second)}); both dates need the same bands in the same order: choose "
                         "them with --bands-t1 and --bands-t2")
    return first, second


def _image_bands(path: Path) -> tuple[int, ...]:
    """Every band of a raster that is not an alpha band."""
    with open_raster(path) as src:
        return tuple(i for i, name in enumerate(src.colorinterp, start=1) if name != "alpha") or (1,)


def _listed(bands: tuple[int, ...]) -> str:
    return f"band{'s' if len(bands) != 1 else ''} {','.join(map(str, bands))}"


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


class TileImages:
    """How one date's tiles are written: PNG pictures for three 8-bit bands, else GeoTIFF in the imagery's units.

    GeoTIFF tiles keep the source's data type (integer values of a warped date rounded), carry each band's
    declared scale and offset (which the dataset reader applies, as the engine does), and hold 0 where the
    date has no data, which is what the engine puts there too. :meth:`add_statistics` sums each band's
    values (scale and offset applied) over the valid pixels of the training tiles.
    """

    def __init__(self, dtypes: tuple[str, ...], scales: tuple[tuple[float, float], ...]) -> None:
        self.dtype = np.result_type(*dtypes)
        self.scales = scales
        self.picture = len(dtypes) == 3 and self.dtype == np.uint8 and all(v == (1.0, 0.0) for v in scales)
        self.suffix = ".png" if self.picture else ".tif"
        self.to_units = plan_scaling(dtypes, np.zeros((len(dtypes), 1, 1), np.float32), np.ones((1, 1), bool),
                                     InputScaling(method="statistics"), (0.0,) * len(dtypes),
                                     (1.0,) * len(dtypes), scales)
        self.sums = np.zeros(len(dtypes), np.float64)
        self.squares = np.zeros(len(dtypes), np.float64)
        self.pixels = 0

    @property
    def eight_bit(self) -> bool:
        """8-bit values that mean what they say (no declared scale or offset): the 0..255 rule applies."""
        return bool(self.dtype == np.uint8) and all(v == (1.0, 0.0) for v in self.scales)

    def write(self, path: Path, image: np.ndarray, valid: np.ndarray, crs: Any, transform: Any) -> None:
        """Write one tile (``image`` float32 ``[bands, H, W]`` as :meth:`RasterPair.read` gives it); a GeoTIFF
        tile is georeferenced (``crs``, ``transform``), so it can be looked at over the scene in QGIS."""
        values = np.where(valid, image, 0)
        if np.issubdtype(self.dtype, np.integer):
            info = np.iinfo(self.dtype)
            values = np.clip(np.rint(values), info.min, info.max)
        values = values.astype(self.dtype)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.picture:
            _save(path, values.transpose(1, 2, 0))
            return
        write_array(path, values, crs, transform, scales=self.scales)

    def add_statistics(self, image: np.ndarray, valid: np.ndarray) -> None:
        """Add the valid pixels of a training tile to the per-band sums."""
        values = self.to_units.apply(image[:, valid][:, None, :].astype(np.float32)).astype(np.float64)
        self.sums += values.sum(axis=(1, 2))
        self.squares += np.square(values).sum(axis=(1, 2))
        self.pixels += int(valid.sum())

    def statistics(self) -> tuple[list[float], list[float]]:
        """Per-band mean and standard deviation of the pixels added (in the imagery's units)."""
        mean = self.sums / max(self.pixels, 1)
        std = np.sqrt(np.maximum(self.squares / max(self.pixels, 1) - np.square(mean), 0.0))
        floor = np.maximum(np.abs(mean) * 1e-6, 1e-6)  # a constant band still divides by something positive
        return [float(f"{v:.6g}") for v in mean], [float(f"{v:.6g}") for v in np.maximum(std, floor)]


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
    bands_t1, bands_t2 = choose_bands(args.t1, args.t2, args.bands_t1, args.bands_t2)
    pair = RasterPair(args.t1, args.t2, bands_t1, bands_t2, needed_bands=len(bands_t1))
    label_views: list[_Labels] = []
    try:
        label_views.append(_Labels(args.labels, pair))
        if semantic:
            label_views.append(_Labels(args.labels_t2, pair))
        images = tuple(TileImages(dtypes, scales) for dtypes, scales in zip(pair.dtypes(), pair.file_scales(),
                                                                             strict=True))
        rows, cols = pair.height // args.tile, pair.width // args.tile
        if rows == 0 or cols == 0:
            raise InputError(f"the area both dates cover is {pair.width} x {pair.height} px, smaller than one "
                             f"--tile {args.tile}; choose a smaller tile")
        with staged_folder(args.out) as staging:
            written = _write_tiles(args, pair, label_views, images, staging, rows, cols, shares, format,
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


def _write_tiles(args: argparse.Namespace, pair: RasterPair, label_views: list[_Labels],
                 images: tuple[TileImages, TileImages], staging: Path, rows: int, cols: int,
                 shares: tuple[float, float, float], format: str, palette: np.ndarray) -> list[dict[str, Any]]:
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
    has_train = "train" in splits.values()  # statistics of the training split (of every tile if it has none)
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
        for folder, image, writer in ((folders[0], image1, images[0]), (folders[1], image2, images[1])):
            writer.write((base / folder / name).with_suffix(writer.suffix), image, valid, pair.crs,
                         pair.transform.for_window(col, row))
            if split == "train" or not has_train:
                writer.add_statistics(image, valid)
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
        **_bands_record(pair, images, has_train, (args.t1, args.t2)),
    }, indent=2), encoding="utf-8")
    return records


def _bands_record(pair: RasterPair, images: tuple[TileImages, TileImages], has_train: bool,
                  paths: tuple[Path, Path]) -> dict[str, Any]:
    """What ``train`` needs to know of the bands: which, in what units, and their training statistics."""
    mean_t1, std_t1 = images[0].statistics()
    mean_t2, std_t2 = images[1].statistics()
    eight_bit = images[0].eight_bit and images[1].eight_bit
    return {
        "bands_t1": list(pair.bands_t1), "bands_t2": list(pair.bands_t2),
        "band_descriptions_t1": _described(paths[0], pair.bands_t1),
        "band_descriptions_t2": _described(paths[1], pair.bands_t2),
        "dtype_t1": str(images[0].dtype), "dtype_t2": str(images[1].dtype),
        # plain 8-bit imagery keeps the default rule (taken as is); anything else is taken in its own units
        "scaling": "percentile" if eight_bit else "statistics",
        "statistics": {"mean_t1": mean_t1, "std_t1": std_t1, "mean_t2": mean_t2, "std_t2": std_t2,
                       "split": "train" if has_train else "all", "pixels": images[0].pixels},
    }


def _described(path: Path, bands: tuple[int, ...]) -> list[list[str]]:
    """``[description, colour interpretation]`` of each band, as the file states them (for the model card, so that
    the plugin can check a scene's bands against the ones the model learned from)."""
    with open_raster(path) as src:
        return [[src.descriptions[b - 1], src.colorinterp[b - 1]] for b in bands]


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
