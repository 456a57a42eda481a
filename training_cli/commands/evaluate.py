"""``evaluate``: score a checkpoint (through the engine) or a folder of predictions on a dataset split.

Scores follow the SECOND protocol for semantic change (OA both as the mean
per-image accuracy the papers report and from the global confusion matrix,
mIoU, SeK, F_scd, kappa, per-class IoU) and the change-class precision,
recall, F1, IoU, OA and kappa for binary change; see ``docs/training.md``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from core.devices import PRECISION_CHOICES
from core.errors import InputError
from core.models.checkpoint import load_checkpoint
from training_cli.datasets import FORMATS, detect_format, open_dataset
from training_cli.evaluation import (
    check_compatible,
    engine_predictions,
    folder_predictions,
    format_table,
    pairs_present,
    predicted_pairs,
    score,
)

NAME = "evaluate"

_EXAMPLES = """\
examples:
  # a checkpoint on SECOND's validation split, scores also as JSON
  python -m training_cli evaluate --checkpoint best.pt --data SECOND --split val --json scores.json
  # predictions written by `predict` (or any tool, in the dataset layout): the pairs the folder holds
  python -m training_cli evaluate --pred predictions/ --data SECOND
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Declare ``evaluate`` and its options."""
    parser = subparsers.add_parser(
        NAME,
        help="score a checkpoint or a folder of predictions (SECOND protocol / binary metrics)",
        description=(
            "Score a checkpoint on a dataset split, running every pair through the same engine the QGIS plugin "
            "uses (so the scores are what an analyst gets), or score a folder of predictions in the dataset "
            "layout. Prints a table; --json writes the scores as flat keys (fractions)."
        ),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, metavar="FILE", help="model file to evaluate")
    source.add_argument("--pred", type=Path, metavar="DIR", help="folder of predictions in the dataset layout")
    parser.add_argument("--data", required=True, type=Path, metavar="DIR", help="dataset folder")
    parser.add_argument("--split", metavar="SPLIT",
                        help="val, test, train, all, or a list file (default: val for --checkpoint; for --pred, the "
                             "pairs the prediction folder holds, whichever split they belong to)")
    parser.add_argument("--format", choices=FORMATS, help="dataset layout (default: detected)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the scores as JSON")
    parser.add_argument("--device", default="auto", metavar="DEV", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime", "openvino"),
                        help="where the network runs (auto: on a CPU, the fastest of PyTorch and the installed "
                             "runtimes, measured once on a run long enough to repay it)")
    parser.add_argument("--precision", default="fp32", choices=PRECISION_CHOICES,
                        help="arithmetic of the forward pass (default fp32: the model's own scores, the same on every "
                             "machine and backend; auto: what the plugin would use here, bf16 autocast where the "
                             "CPU or GPU is fast at it)")
    parser.add_argument("--batch-size", type=int, default=4, metavar="N", help="tiles per forward pass")
    return parser


def run(args: argparse.Namespace) -> int:
    """Predict (or read predictions), score, print and optionally write JSON."""
    if args.json is not None and args.json.exists():
        raise InputError(f"{args.json} already exists; choose another --json file (nothing is overwritten)")
    format = args.format or detect_format(args.data)
    if args.pred is not None and args.split is None:
        # Not a default split: on a folder without splits "val" is a seeded sixth of its pairs, and predictions
        # made for others would be refused as missing, or a few of them scored as if they were all.
        chosen = predicted_pairs(args.pred, args.data, format)
        dataset = open_dataset(args.data, format, chosen.split, names=chosen.names)
        split, scope, present = "predicted", f"the pairs {args.pred} holds", chosen.present
    else:
        split = str(args.split or "val")
        dataset = open_dataset(args.data, format, split)
        scope, present = f"split {split}", sum(len(names) for names in pairs_present(args.data, format).values())
    if args.checkpoint is not None:
        model = load_checkpoint(args.checkpoint)
        check_compatible(model[1], dataset)
        predictions = engine_predictions(model, dataset, device=args.device, batch_size=args.batch_size,
                                         backend=args.backend, precision=args.precision)
        source = f"{args.checkpoint} ({model[1].model})"
    else:
        predictions = folder_predictions(args.pred, dataset)
        source = str(args.pred)
    scores = score(dataset, predictions)
    counted = f"{len(dataset.samples)} of {present} pairs scored" if present else f"{len(dataset.samples)} pairs"
    print(format_table(scores, f"{source} on {args.data} [{dataset.format}, {scope}: {counted}]"), end="")
    if args.json is not None:
        payload: dict[str, Any] = {key: (None if math.isnan(v) else v) for key, v in scores.items()}
        payload.update(pairs=len(dataset.samples), pairs_present=present, split=split, format=dataset.format)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        temporary = args.json.with_name(f".{args.json.name}.partial")
        temporary.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        temporary.replace(args.json)
        print(f"wrote {args.json}")
    return 0
