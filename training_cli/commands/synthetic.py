"""``synthetic``: a procedural two-date dataset and a large georeferenced scene pair, with ground truth.

Everything it writes is synthetic (see :mod:`core.synthetic` for how it is
built and why it is not trivially separable). The dataset lands in the layout
``prepare`` and the real datasets use, so ``train``, ``evaluate`` and
``predict`` read it like any other; the scene pair (T2 in another CRS and
resolution, with a nodata border) is what the QGIS plugin and the demo run on.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from core import synthetic
from core.errors import InputError
from training_cli.datasets import CLASSES
from training_cli.outputs import staged_folder

NAME = "synthetic"

_EXAMPLES = """\
examples:
  # 16 pairs of 256 px in the SECOND layout (train/val/test) plus a 2048 px scene pair
  python -m training_cli synthetic --out synth-second
  # a binary change set (A/ B/ label/ with 0/255 labels), no scene
  python -m training_cli synthetic --out synth-binary --format binary --pairs 40 --size 256 --scene-size 0
  # a 4096 px scene with T2 in UTM 32N at 2 m
  python -m training_cli synthetic --out big --pairs 0 --scene-size 4096 --scene-t2-crs EPSG:32632 \\
      --scene-t2-resolution 2
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Declare ``synthetic`` and its options."""
    parser = subparsers.add_parser(
        NAME,
        help="write a synthetic two-date dataset and scene pair (for tests, demos, benchmarks)",
        description=(
            "Write a SYNTHETIC change-detection dataset: land cover built like a real landscape, changed by "
            "realistic transitions (construction, demolition, clearing, planting, shifting shores), rendered "
            "with textures that are not the label colours, a season and illumination shift between dates, "
            "noise and slight misregistration. Pairs go to OUT/train, OUT/val, OUT/test in the chosen layout; "
            "the scene pair (T1 in UTM, T2 in another CRS with a nodata border, ground truth on T1's grid) to "
            "OUT/scene."
        ),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="new folder to write")
    parser.add_argument("--format", default="second", choices=tuple(synthetic.LAYOUT_FOLDERS),
                        help="dataset layout and classes (binary uses SECOND's land cover, 0/255 labels)")
    parser.add_argument("--pairs", type=int, default=16, metavar="N", help="number of pairs (70/15/15 split)")
    parser.add_argument("--size", type=int, default=256, metavar="N", help="pair size in pixels")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="random seed; same seed, same data")
    parser.add_argument("--scene-size", type=int, default=2048, metavar="N",
                        help="size of the georeferenced scene pair in pixels (0: none)")
    parser.add_argument("--scene-t2-crs", default="EPSG:4326", metavar="CRS",
                        help="CRS T2 of the scene is delivered in ('same' for T1's grid)")
    parser.add_argument("--scene-t2-resolution", type=float, metavar="X",
                        help="T2's pixel size in its CRS units (default: GDAL's choice for the same detail)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Generate and write the dataset and scene."""
    if args.pairs < 0 or args.size < 32 or args.scene_size < 0 or (0 < args.scene_size < 64):
        raise InputError("--pairs must be >= 0, --size >= 32 and --scene-size 0 or >= 64")
    if args.pairs == 0 and args.scene_size == 0:
        raise InputError("nothing to write: give --pairs or --scene-size")
    classes = CLASSES[args.format] or CLASSES["second"]
    started = time.perf_counter()
    with staged_folder(args.out) as staging:
        if args.pairs:
            counts = synthetic.write_dataset(staging, classes, format=args.format, pairs=args.pairs,
                                             size=args.size, seed=args.seed)
        if args.scene_size:
            t2_crs = None if args.scene_t2_crs == "same" else args.scene_t2_crs
            synthetic.write_scene(staging / "scene", classes, size=args.scene_size, seed=args.seed + 7,
                                  t2_crs=t2_crs, t2_resolution=args.scene_t2_resolution)
    print(f"wrote {args.out} (synthetic, seed {args.seed}) in {time.perf_counter() - started:.1f} s")
    if args.pairs:
        split = ", ".join(f"{n} {name}" for name, n in counts.items())
        print(f"  {args.format} layout: {args.pairs} pairs of {args.size} px ({split})")
    if args.scene_size:
        print(f"  scene/: t1.tif, t2.tif ({args.scene_size} px; T2 in {args.scene_t2_crs}), "
              "truth_t1.tif, truth_t2.tif, truth_change.tif, truth_fromto.tif")
    return 0
