"""``train``: train a network with its paper's recipe (or yours) on a change-detection dataset.

The recipe of each network lives in ``training_cli/configs/<model>.toml``; flags and ``--set``
change single values, ``--print-config`` shows the result. The run writes ``last.pt`` every epoch,
``best.pt`` whenever the validation metric improves, ``log.csv`` (and TensorBoard logs when
tensorboard is installed) into ``--out``; ``export`` turns ``best.pt`` into the model file the QGIS
plugin runs. Several processes: ``torchrun --nproc-per-node N -m training_cli train ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch

from core.errors import InputError
from core.models import registry
from core.models.card import PRESETS, InputScaling, TrainingResize
from core.models.checkpoint import make_card

from ..recipes import apply_overrides, format_recipe, load_recipe
from ..trainer import Trainer, TrainingData, processes_from_environment

NAME = "train"
FORMATS = ("second", "landsat-scd", "binary")

_EXAMPLES = """\
examples:
  # the paper's recipe on SECOND (ImageNet backbone, 50 epochs, batch 8, 512 px)
  python -m training_cli train --model lsafnet --data SECOND/ --format second --out runs/lsafnet
  # your own changes on top: fewer epochs, a smaller crop, a local ImageNet file (offline machines)
  python -m training_cli train --model sscfnet --data LEVIR-CD/ --format binary --epochs 20 --crop 256 \\
      --pretrained resnet50-imagenet.pth --out runs/sscfnet
  # any recipe value with --set (stages are numbered from 1); see the merged recipe first
  python -m training_cli train --model cldrnet --data LEVIR-CD/ --format binary --set stages.2.lr=0.002 \\
      --print-config
  # your own recipe file (copy one from training_cli/configs/) and continue after a crash or Ctrl-C
  python -m training_cli train --config my-gapl.toml --data SECOND/ --format second --out runs/gapl --resume
  # a set from prepare (any bands), fine-tuned from an existing model, rare classes weighted up
  python -m training_cli train --model lsafnet --data my-scd/ --init-from second-lsafnet.pt \
      --class-weights balanced --out runs/mine
  # two GPUs (or two CPU processes) on one machine
  torchrun --nproc-per-node 2 -m training_cli train --model gapl_scd --data SECOND/ --format second --out runs/g
"""

#: Dataset format -> the card preset giving its classes (and published statistics, if any).
_PRESET_OF_FORMAT = {"second": "second", "landsat-scd": "landsat-scd", "binary": "binary"}
#: Formats whose published per-date statistics ``normalisation = "preset"`` uses.
_PUBLISHED_STATISTICS = ("second", "landsat-scd")
#: The recipe's ``[data]`` keys of explicit statistics.
_STATISTICS = ("mean_t1", "std_t1", "mean_t2", "std_t2")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        NAME, help="train a network (paper recipes by default)",
        description=__doc__.split("\n\n", 1)[1].replace("``", "'"),
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", metavar="NAME", help=f"network: {', '.join(registry.model_names())}")
    parser.add_argument("--config", type=Path, metavar="FILE", help="recipe TOML file (default: the model's paper "
                        "recipe in training_cli/configs/)")
    parser.add_argument("--data", type=Path, metavar="DIR", help="dataset folder")
    parser.add_argument("--format", choices=FORMATS, help="dataset layout (default: second for semantic networks, "
                        "binary for binary ones)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="run folder for checkpoints and logs")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    parser.add_argument("--epochs", type=int, metavar="N", help="epochs of every stage")
    parser.add_argument("--batch-size", type=int, metavar="N", help="pairs per step and process")
    parser.add_argument("--lr", type=float, metavar="X", help="learning rate of the first stage (later stages keep "
                        "their ratio to it)")
    parser.add_argument("--crop", type=int, metavar="N", help="training crop in px, a multiple of 32; also the "
                        "exported model's tile size")
    parser.add_argument("--workers", type=int, metavar="N", help="DataLoader worker processes")
    parser.add_argument("--seed", type=int, metavar="N", help="random seed")
    parser.add_argument("--pretrained", metavar="PATH", help="backbone start: 'imagenet' (default, torchvision's "
                        "weights), a local torchvision .pth file, or 'none'")
    parser.add_argument("--init-from", metavar="MODEL.pt",
                        help="fine-tune a model file of the same network: every weight that fits is copied, the first "
                             "convolution is adapted when the band count differs, heads for other classes start new; "
                             "the card records it (recipe train.init_from)")
    parser.add_argument("--class-weights", metavar="W,W,...|balanced",
                        help="weights of the land-cover classes 1..N in the semantic losses, or 'balanced' (median "
                             "frequency of the training split's changed pixels, capped at 10x); default none")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any recipe value, e.g. train.augment=\"flips\" or stages.1.epochs=10 (repeatable)")
    parser.add_argument("--print-config", action="store_true", help="print the merged recipe and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    return parser


def run(args: argparse.Namespace) -> int:
    recipe = apply_overrides(load_recipe(args.model, args.config), {
        "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "crop": args.crop,
        "workers": args.workers, "seed": args.seed, "pretrained": args.pretrained, "init_from": args.init_from,
        "class_weights": _class_weights(args.class_weights),
    }, args.set)
    if args.print_config:
        print(format_recipe(recipe))
        return 0
    if args.data is None or args.out is None:
        raise InputError("train needs --data DIR and --out DIR (or --print-config to see the recipe)")
    processes = processes_from_environment()
    data = open_training_data(recipe, args.data, args.format)
    result = Trainer(recipe, data, args.out, device=args.device, resume=args.resume, processes=processes,
                     progress=not args.no_progress and sys.stderr.isatty()).run()
    return result.exit_code


def _class_weights(text: str | None) -> str | list[float] | None:
    """``--class-weights`` as the recipe holds it: a word, or one number per class."""
    if text is None or text.strip().lower() in ("none", "balanced"):
        return None if text is None else text.strip().lower()
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"--class-weights needs 'balanced', 'none' or one number per class like 1,4,1,2; "
                         f"got {text!r}") from None


def open_training_data(recipe: dict[str, Any], root: Path, data_format: str | None) -> TrainingData:
    """The training and validation splits of ``root``, normalised as the recipe says, and the card to train.

    The band count comes from the images (any number, the same for both dates and every pair), and with it
    the network's ``in_channels``. The statistics are, in this order: the recipe's ``data.mean_t1`` ...; the
    ones ``prepare`` computed on the set's training split; a format's published ones (``normalisation =
    "preset"``, three bands only); else computed here on the training split. A set that ``prepare`` wrote
    gives the card its band numbers and its scaling rule (its imagery's own units unless 8-bit); any other
    set of images that are not 8-bit is taken in its own units too.
    """
    from ..datasets import dataset_bands, is_eight_bit, open_dataset, prepared_bands

    spec = registry.get_spec(recipe["model"])
    data_format = data_format or ("second" if spec.task == "semantic" else "binary")
    preset = PRESETS[_PRESET_OF_FORMAT[data_format]]
    if preset.task != spec.task:
        raise InputError(f"{spec.name} is a {spec.task} network but --format {data_format} is {preset.task} data")
    crop = int(recipe["train"]["crop"])
    given = recipe["data"]
    resize = given.get("resize")
    bands = dataset_bands(root, data_format, "train")
    prepared = prepared_bands(root)
    if all(k in given for k in _STATISTICS):
        stats = tuple(tuple(float(v) for v in given[k]) for k in _STATISTICS)
        source = "recipe"
        for key, values in zip(_STATISTICS, stats, strict=True):
            if len(values) != bands:
                raise InputError(f"recipe: data.{key} has {len(values)} values but the images of {root} have "
                                 f"{bands} bands; give one value per band")
    elif prepared is not None:
        stats = (prepared.mean_t1, prepared.std_t1, prepared.mean_t2, prepared.std_t2)
        source = prepared.source
    elif given["normalisation"] == "preset" and data_format in _PUBLISHED_STATISTICS and bands == len(preset.mean_t1):
        stats = (preset.mean_t1, preset.std_t1, preset.mean_t2, preset.std_t2)
        source = f"published {preset.name} statistics"
    else:
        raw = open_dataset(root, data_format, "train", crop=None, mean=(0.0,) * bands, std=(1.0,) * bands,
                           resize=resize)
        stats = dataset_statistics(raw)
        source = "computed on the training split"
    mean_t1, std_t1, mean_t2, std_t2 = stats
    norm = {"mean": mean_t1, "std": std_t1, "mean_t2": mean_t2, "std_t2": std_t2, "resize": resize}
    train = open_dataset(root, data_format, "train", crop=crop, **norm)
    val = open_dataset(root, data_format, "val", crop=None, **norm)
    if val.bands != train.bands:
        raise InputError(f"the validation images ({val.samples[0].t1} ...) have {val.bands} bands but the training "
                         f"images ({train.samples[0].t1} ...) have {train.bands}; every pair needs the same bands")
    band_numbers = (prepared.bands_t1, prepared.bands_t2) if prepared else (tuple(range(1, bands + 1)),) * 2
    statistics_preset = dataclasses.replace(preset, mean_t1=tuple(mean_t1), std_t1=tuple(std_t1),
                                            mean_t2=tuple(mean_t2), std_t2=tuple(std_t2))
    card = make_card(spec.name, statistics_preset, options=recipe.get("options", {}), tile_size=crop,
                     bands=band_numbers[0],
                     dataset=f"{data_format} dataset {root.name} ({len(train)} training pairs)")
    own_units = prepared.scaling == "statistics" if prepared else not is_eight_bit(root, data_format, "train")
    resized = training_resize((train, val), resize)
    card = dataclasses.replace(card, bands_t2=band_numbers[1], training_resize=resized,
                               scaling=InputScaling(method="statistics") if own_units else card.scaling)
    description = {"root": str(root), "format": data_format, "train_pairs": len(train), "val_pairs": len(val),
                   "bands": bands, "normalisation": source}
    if prepared is not None and prepared.descriptions_t1:  # what the bands were, for the plugin's band check
        description["band_descriptions"] = {"t1": [list(d) for d in prepared.descriptions_t1],
                                            "t2": [list(d) for d in prepared.descriptions_t2]}
    return TrainingData(train, val, card, description)


def training_resize(datasets: tuple[Any, ...], size: int | None) -> TrainingResize | None:
    """What ``data.resize`` does to the pairs, for the model card (``None``: used at their own size).

    The card holds one factor, so pairs of different sizes, which ``resize`` would scale by different
    factors, are refused with the first two sizes and their files.

    Raises:
        InputError: The pairs do not all have one size.
    """
    if not size:
        return None
    first: dict[tuple[int, int], Path] = {}
    for dataset in datasets:
        for sample, shape in zip(dataset.samples, dataset.sizes, strict=True):
            first.setdefault(shape, sample.t1)
    if len(first) > 1:
        (shape_a, path_a), (shape_b, path_b) = list(first.items())[:2]
        raise InputError(f"data.resize = {size}: the pairs have different sizes ({path_a} is {shape_a[1]} x "
                         f"{shape_a[0]} px, {path_b} is {shape_b[1]} x {shape_b[0]} px), so resizing would scale "
                         "each by another factor and the model card could not say which; bring the pairs to one "
                         "size first or train without data.resize")
    if not first:
        return None
    (height, width), = first
    if (height, width) == (size, size):
        return None
    return TrainingResize(source_height=height, source_width=width, size=int(size))


def dataset_statistics(dataset: Any) -> tuple[tuple[float, ...], ...]:
    """Per-date, per-band mean and standard deviation over every pixel of un-normalised items."""
    sums: dict[str, torch.Tensor] = {}
    squares: dict[str, torch.Tensor] = {}
    count = 0
    for index in range(len(dataset)):
        item = dataset[index]
        pixels = item["t1"].shape[-1] * item["t1"].shape[-2]
        for key in ("t1", "t2"):
            values = item[key].double().flatten(1)
            sums[key] = sums.get(key, 0) + values.sum(1)
            squares[key] = squares.get(key, 0) + values.square().sum(1)
        count += pixels
    if count == 0:
        raise InputError("the training split is empty; cannot compute normalisation statistics")
    out = []
    for key in ("t1", "t2"):
        mean = sums[key] / count
        std = (squares[key] / count - mean.square()).clamp_min(1e-6).sqrt()
        out += [tuple(round(float(v), 4) for v in mean), tuple(max(round(float(v), 4), 1e-3) for v in std)]
    return tuple(out)
