"""``init``: write an untrained, self-describing checkpoint.

Every later step (train, evaluate, predict, the QGIS plugin) starts from a
checkpoint, because the checkpoint's card is what says which network, classes,
normalisation and tile size to use. ``init`` is how a user gets the first one:
it fixes the network and its options against a dataset preset, optionally starts
the backbone from ImageNet weights, and refuses combinations that cannot work
(a binary network with a semantic preset, a backbone the network lacks, ...)
before anything is trained.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.models import registry
from core.models.card import PRESETS
from core.models.checkpoint import make_card, save_checkpoint
from core.models.complexity import count_parameters

from ..outputs import refuse_existing_file

NAME = "init"

_EXAMPLES = """\
examples:
  # a semantic network for SECOND-style data (6 classes)
  python -m training_cli init --model gapl_scd --preset second --out gapl-second.pt
  # a binary network with a ResNeXt-50 backbone started from local ImageNet weights
  python -m training_cli init --model sscfnet --preset binary --backbone resnext50_32x4d \\
      --pretrained resnext50_32x4d-imagenet.pth --out sscfnet-rx50.pt
  # network options as key=value (values are parsed as JSON, else taken as text)
  python -m training_cli init --model lsafnet --preset landsat-scd --option variant=code --out lsaf.pt
"""

#: Options with their own flag (or fixed by the preset), refused in --option to avoid two sources of truth.
_RESERVED = {
    "backbone": "use --backbone",
    "pretrained": "use --pretrained",
    "num_classes": "the preset sets the number of classes",
}
_KEY = re.compile(r"^[A-Za-z_]\w*$")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Declare ``init`` and its options."""
    presets = "; ".join(f"{name}: {preset.description}" for name, preset in PRESETS.items())
    parser = subparsers.add_parser(
        NAME,
        help="write an untrained, self-describing checkpoint",
        description=(
            "Write an untrained checkpoint: the network's weights plus a model card (network, options, classes, "
            f"normalisation, tile size) that every later command reads. Presets: {presets}."
        ),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, metavar="NAME",
                        help=f"network: {', '.join(registry.model_names())}")
    parser.add_argument("--preset", required=True, choices=tuple(PRESETS),
                        help="dataset preset giving classes and normalisation; its task must match the network's")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE", help="checkpoint file to write")
    parser.add_argument("--backbone", metavar="B", help="backbone (default: the network's first); see `models`")
    parser.add_argument("--tile-size", type=int, metavar="N",
                        help="inference tile size, a multiple of 32 (default: the network's paper training crop)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="network option, repeatable; VALUE is JSON (3, 0.5, true, null) or plain text")
    parser.add_argument("--pretrained", metavar="PATH",
                        help="start the backbone from ImageNet weights: a local .pth state dict, or 'imagenet' for "
                             "torchvision's cache (not stored in the checkpoint)")
    parser.add_argument("--force", action="store_true", help="replace FILE if it exists")
    return parser


def run(args: argparse.Namespace) -> int:
    """Build the network for the preset and write it with its card."""
    out: Path = args.out
    refuse_existing_file(out, args.force)
    options = parse_options(args.option)
    if args.backbone is not None:
        options["backbone"] = args.backbone
    card = make_card(args.model, args.preset, options=options, tile_size=args.tile_size)
    build_options = dict(card.options)
    if args.pretrained:
        build_options["pretrained"] = args.pretrained
    try:
        model = registry.build_model(card.model, **build_options)
    except FileNotFoundError as error:
        raise InputError(f"{error}; check --pretrained") from None
    except ValueError as error:
        raise InputError(str(error)) from None
    save_checkpoint(out, model, card)
    classes = f"{card.num_classes} classes ({', '.join(card.class_names)})" if card.task == "semantic" else "binary"
    shown = ", ".join(f"{k}={v}" for k, v in card.options.items() if k != "pretrained")
    print(f"wrote {out}")
    print(f"  model {card.model} ({shown})")
    print(f"  preset {args.preset}: {classes}; tile {card.tile_size} px; "
          f"{count_parameters(model) / 1e6:.2f} M parameters")
    print(f"  backbone start: {args.pretrained or 'random initialisation'}; weights untrained")
    return 0


def parse_options(items: list[str]) -> dict[str, Any]:
    """Turn ``["key=value", ...]`` into options; values are JSON when they parse, else text.

    Raises:
        InputError: A malformed item, a repeated key, or a key with its own flag.
    """
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            raise InputError(f"--option needs KEY=VALUE with a Python-style name as KEY, got {item!r}")
        if key in _RESERVED:
            raise InputError(f"--option {key}=... is not accepted: {_RESERVED[key]}")
        if key in options:
            raise InputError(f"--option {key} is given twice")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        if isinstance(value, (list, dict)):
            raise InputError(f"--option {key}: only numbers, booleans, null or text are accepted, got {text!r}")
        options[key] = value
    return options
