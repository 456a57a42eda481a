"""``export``: turn a training checkpoint into the self-describing model file the QGIS plugin runs.

The model file holds the weights and the card: network and options, class names and palette,
tile size (the training crop), bands, input scaling, per-date mean and standard deviation, what it
was trained on, its validation metrics, the full recipe, the backbone's start, the date and the
software version. ``--half`` stores float16 weights (half the size); they load on any device.
``--format onnx`` also writes the network as ONNX beside the model file (``<name>.<tile>px.onnx``),
for other tools or to check the export ahead of a run; the plugin itself needs only the model file
and keeps its own verified ONNX cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.backends.export import export_checkpoint, onnx_beside
from core.errors import InputError
from core.models import registry
from core.models.card import ModelCard
from core.models.checkpoint import save_checkpoint
from core.version import __version__

from ..outputs import refuse_existing_file
from ..trainer import read_training_state

NAME = "export"

_EXAMPLES = """\
examples:
  python -m training_cli export --checkpoint runs/lsafnet/best.pt --out lsafnet-second.pt
  python -m training_cli export --checkpoint runs/sscfnet/best.pt --out sscfnet-levir-fp16.pt --half
  python -m training_cli export --checkpoint runs/sscfnet/best.pt --out sscfnet-levir.pt --format onnx
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        NAME, help="write the model file the QGIS plugin runs from a training checkpoint",
        description=__doc__.split("\n\n", 1)[1].replace("``", "'"), epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path, metavar="FILE",
                        help="best.pt or last.pt of a train run")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE", help="model file to write")
    parser.add_argument("--half", action="store_true", help="store float16 weights (half the file size)")
    parser.add_argument("--format", choices=("pt", "onnx"), default="pt",
                        help="onnx: also write the network as ONNX beside the model file (default: pt only)")
    parser.add_argument("--force", action="store_true", help="replace FILE if it exists")
    return parser


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    refuse_existing_file(out, args.force)
    if out.resolve() == args.checkpoint.resolve():
        raise InputError("--out must not be the training checkpoint itself")

    state = read_training_state(args.checkpoint)
    try:
        card = ModelCard.from_dict(json.loads(state["card"]))
    except (ValueError, TypeError, KeyError) as error:
        raise InputError(f"the model card in {args.checkpoint} cannot be read: {error}") from None
    onnx_file = onnx_beside(out, card.tile_size) if args.format == "onnx" else None
    if onnx_file is not None:
        refuse_existing_file(onnx_file, args.force)
    card = dataclasses.replace(card, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               software_version=__version__)
    model = registry.build_model(card.model, **{**card.options, "pretrained": None})
    model.load_state_dict(state["model"])
    model.eval()
    save_checkpoint(out, model, card, half=args.half)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in card.metrics.items()) or "none"
    print(f"wrote {out}{' (float16 weights)' if args.half else ''}")
    if onnx_file is not None:
        onnx_file.unlink(missing_ok=True)  # --force was given, or it did not exist
        print(f"wrote {export_checkpoint(out)} (ONNX, {card.tile_size} px tiles)")
    print(f"  model {card.model}; {card.task}; tile {card.tile_size} px; trained on {card.dataset}")
    print(f"  validation metrics (epoch {card.training.get('metrics_epoch')}): {shown}")
    return 0
