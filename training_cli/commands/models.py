"""``models``: list every network with its size, next to the size its paper reports.

Sizes are measured, not copied: each network is built on PyTorch's ``meta``
device (no memory, no initialisation) and counted with
:mod:`core.models.complexity`. Compute is shown two ways because the papers
disagree on the unit: as FLOPs (2 x multiply-accumulates) at the network's default
tile size, and in the paper's own convention (unit and input size) beside the
paper's figure, so a user can see at a glance whether an implementation matches.

A network whose package fails to import is listed with its error rather than
breaking the listing: the command is also a diagnostic.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from core.models import registry
from core.models.base import ModelSpec
from core.models.complexity import count_flops, count_parameters

NAME = "models"

_EXAMPLES = """\
examples:
  python -m training_cli models
  python -m training_cli models --json > models.json
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Declare ``models`` and its options."""
    parser = subparsers.add_parser(
        NAME,
        help="list the networks with parameters and FLOPs (measured vs paper)",
        description=(
            "List every registered network: task, backbones, default tile size, parameters and compute per "
            "backbone. Compute is given as GFLOPs (2 x multiply-accumulates) at the default tile size and in "
            "the paper's convention (its unit and input size) next to the paper's figure."
        ),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    return parser


def run(args: argparse.Namespace) -> int:
    """Measure every network and print a table or JSON."""
    entries = describe_models()
    if args.json:
        print(json.dumps({"models": entries}, indent=2))
    else:
        sys.stdout.write(format_table(entries))
    return 0


def describe_models() -> list[dict[str, Any]]:
    """One dictionary per registered network (see :func:`describe_model`)."""
    return [describe_model(name) for name in registry.model_names()]


def describe_model(name: str) -> dict[str, Any]:
    """Task, backbones and measured vs reported sizes of network ``name``.

    Returns:
        A JSON-ready dictionary. ``error`` is ``None`` unless the network's package
        failed to import, in which case only ``name`` and ``error`` are meaningful.
        ``params_m``/``gflops`` are for the default backbone at the default tile
        size; ``per_backbone`` holds one row per backbone (see :func:`_measure`).
    """
    try:
        spec = registry.get_spec(name)
    except Exception as error:  # noqa: BLE001 - a broken network must not hide the others
        return {"name": name, "error": f"{type(error).__name__}: {error}"}
    rows = [_measure(spec, backbone) for backbone in spec.backbones or (None,)]
    default = rows[0]
    return {
        "name": name,
        "error": None,
        "task": spec.task,
        "paper": spec.paper,
        "backbones": list(spec.backbones),
        "default_backbone": spec.backbones[0] if spec.backbones else None,
        "default_tile_size": spec.default_tile_size,
        "default_options": spec.default_options,
        "params_m": default.get("params_m"),
        "gflops": default.get("gflops"),
        "per_backbone": rows,
    }


def _measure(spec: ModelSpec, backbone: str | None) -> dict[str, Any]:
    """Parameters and compute of one backbone, in our unit and in the paper's.

    Row keys: ``backbone``; ``params`` and ``params_m``; ``flops`` and ``gflops``
    (FLOPs = 2 x MACs, at ``default_tile_size``); ``paper_params_m``; ``paper_convention`` with ``unit``
    (``"flops"`` or ``"macs"``), ``size``, ``measured_g`` (our count in that unit
    and size) and ``paper_g`` (the paper's figure, or ``None``); ``error``.
    """
    row: dict[str, Any] = {"backbone": backbone, "error": None}
    try:
        model = _build_cheaply(spec, backbone)
        tile = spec.default_tile_size
        flops = count_flops(model, tile)
        size = spec.paper_flops_size or tile
        flops_at_size = flops if size == tile else count_flops(model, size)
    except Exception as error:  # noqa: BLE001 - report a network that does not build, keep listing
        row["error"] = f"{type(error).__name__}: {error}"
        return row
    divisor = 2e9 if spec.paper_flops_unit == "macs" else 1e9
    key = backbone or ""
    params = count_parameters(model)
    row.update(
        params=params,
        params_m=params / 1e6,
        flops=flops,
        gflops=flops / 1e9,
        paper_params_m=spec.paper_params_m.get(key),
        paper_convention={
            "unit": spec.paper_flops_unit,
            "size": size,
            "measured_g": flops_at_size / divisor,
            "paper_g": spec.paper_gflops.get(key),
        },
    )
    return row


def _build_cheaply(spec: ModelSpec, backbone: str | None) -> torch.nn.Module:
    """Build on the meta device (instant, no memory); fall back to the CPU if a network needs real tensors."""
    options = {"backbone": backbone} if backbone is not None else {}
    try:
        with torch.device("meta"):
            return registry.build_model(spec.name, **options)
    except (RuntimeError, NotImplementedError, ValueError, TypeError):
        return registry.build_model(spec.name, **options)


def format_table(entries: list[dict[str, Any]]) -> str:
    """A human-readable listing of :func:`describe_models` output."""
    lines: list[str] = []
    for entry in entries:
        if entry.get("error"):
            lines += [f"{entry['name']}: cannot be loaded: {entry['error']}", ""]
            continue
        tile = entry["default_tile_size"]
        lines.append(f"{entry['name']}  ({entry['task']} change detection; default tile {tile} px)")
        lines.append(f"  paper: {entry['paper']}")
        header = ("backbone", "params M", "paper M", f"GFLOPs@{tile}", "paper's convention", "measured", "paper")
        table: list[tuple[str, ...]] = [header]
        for row in entry["per_backbone"]:
            name = str(row["backbone"]) + (" *" if row["backbone"] == entry["default_backbone"] else "")
            if row["error"]:
                table.append((name, "error: " + row["error"]))
                continue
            convention = row["paper_convention"]
            unit = "G MACs" if convention["unit"] == "macs" else "GFLOPs"
            table.append((
                name,
                f"{row['params_m']:.2f}",
                _maybe(row["paper_params_m"]),
                f"{row['gflops']:.2f}",
                f"{unit}@{convention['size']}",
                f"{convention['measured_g']:.2f}",
                _maybe(convention["paper_g"]),
            ))
        widths = [max(len(cells[i]) for cells in table if len(cells) == len(header)) for i in range(len(header))]
        for cells in table:
            if cells[1].startswith("error:"):
                lines.append(f"  {cells[0]:<{widths[0]}}  {cells[1]}")
                continue
            pairs = enumerate(zip(cells, widths, strict=True))
            lines.append("  " + "  ".join(f"{c:<{w}}" if i in _LEFT else f"{c:>{w}}" for i, (c, w) in pairs))
        lines.append("")
    lines.append("* default backbone. GFLOPs = 2 x multiply-accumulates; 'paper's convention' is the paper's unit "
                 "and input size, measured here, beside the paper's figure ('-' where it reports none).")
    return "\n".join(lines) + "\n"


#: Table columns aligned left (names); the numbers align right.
_LEFT = (0, 4)


def _maybe(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
