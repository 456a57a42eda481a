"""``predict``: a checkpoint's predictions for every pair of a dataset, as PNGs in the dataset's layout.

Pairs go through the same engine the QGIS plugin runs. Semantic models write the
masked class maps of both dates (``label1/ label2/`` for SECOND, ``labelA/ labelB/``
for Landsat-SCD) as palette PNGs: the pixel value is the class index (0 = no
change) and the colour table is the dataset's palette, so scripts that read
labels as RGB colour maps see the dataset's own colours. Binary models, and any
model on a binary dataset, write ``label/`` with 0/255 masks. ``evaluate --pred`` (or any third-party script)
scores the folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from core.devices import PRECISION_CHOICES
from core.models.checkpoint import load_checkpoint
from training_cli.datasets import FORMATS, open_dataset
from training_cli.datasets.reading import write_label_png
from training_cli.evaluation import BINARY_FOLDER, SEMANTIC_FOLDERS, check_compatible, engine_predictions
from training_cli.outputs import staged_folder

NAME = "predict"

_EXAMPLES = """\
examples:
  python -m training_cli predict --checkpoint best.pt --data SECOND --split val --out predictions/
  python -m training_cli evaluate --pred predictions/ --data SECOND --split val
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Declare ``predict`` and its options."""
    parser = subparsers.add_parser(
        NAME,
        help="write a checkpoint's predictions as palette PNGs in the dataset layout",
        description=(
            "Run every pair of a dataset split through the engine the QGIS plugin uses and write the "
            "predictions in the dataset's layout: palette PNGs of each date's class inside change for semantic "
            "models, 0/255 change masks for binary models. Labels are not needed."
        ),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, type=Path, metavar="FILE", help="model file")
    parser.add_argument("--data", required=True, type=Path, metavar="DIR", help="dataset folder")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="new folder for the predictions")
    parser.add_argument("--split", default="all", metavar="SPLIT", help="all (default), train, val, test or a list")
    parser.add_argument("--format", choices=FORMATS, help="dataset layout (default: detected)")
    parser.add_argument("--device", default="auto", metavar="DEV", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime", "openvino"),
                        help="where the network runs (auto: on a CPU, the fastest of PyTorch and the installed "
                             "runtimes, measured once on a run long enough to repay it)")
    parser.add_argument("--precision", default="auto", choices=PRECISION_CHOICES,
                        help="arithmetic of the forward pass: auto (default, as the plugin: bf16 autocast where the "
                             "CPU or GPU is fast at it), fp32, bf16 or fp16 (GPU)")
    parser.add_argument("--batch-size", type=int, default=4, metavar="N", help="tiles per forward pass")
    return parser


def run(args: argparse.Namespace) -> int:
    """Predict every pair and write the PNGs."""
    dataset = open_dataset(args.data, args.format, args.split, labels=False)
    model = load_checkpoint(args.checkpoint)
    card = model[1]
    check_compatible(card, dataset)
    palette = ((255, 255, 255), *(c.color for c in card.classes))
    with staged_folder(args.out) as staging:
        for prediction in engine_predictions(model, dataset, device=args.device, batch_size=args.batch_size,
                                         backend=args.backend, precision=args.precision):
            if card.task == "semantic" and dataset.task == "semantic":
                for folder, classes in zip(SEMANTIC_FOLDERS[dataset.format], (prediction.sem_t1, prediction.sem_t2),
                                           strict=True):
                    write_label_png(staging / folder / f"{prediction.name}.png", classes, palette)
            else:
                write_label_png(staging / BINARY_FOLDER / f"{prediction.name}.png", prediction.change, None)
    kind = "class maps of both dates" if card.task == dataset.task == "semantic" else "change masks"
    print(f"wrote {args.out}: {kind} of {len(dataset.samples)} pairs ({card.model}, {dataset.format} layout)")
    return 0
