"""Predictions over a dataset, made by the engine the plugin runs, and their scores.

:func:`engine_predictions` runs every pair through
:func:`core.engine.run_change_detection` exactly as an analyst's two rasters
would go (written as small GeoTIFFs in a temporary folder, the checkpoint's
card deciding bands, scaling, normalisation, tile size, overlap and blending),
so the scores ``evaluate`` prints are the scores of what the plugin draws.
:func:`folder_predictions` reads predictions someone else made, in the dataset's
own layout. :func:`score` turns either into the metrics of :mod:`core.metrics`.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from torch import nn

from core.engine import OutputPaths, RunOptions, run_change_detection
from core.errors import InputError
from core.metrics import IGNORE_INDEX, BinaryConfusion, SemanticConfusion
from core.models.card import ModelCard
from core.synthetic import write_geotiff

from .datasets import CLASSES, ChangeDataset, list_samples
from .datasets.reading import IMAGE_SUFFIXES, decode_binary, decode_palette, read_image, read_pixels

#: Prediction folders per dataset format, semantic (T1, T2) and binary.
SEMANTIC_FOLDERS = {"second": ("label1", "label2"), "landsat-scd": ("labelA", "labelB"), "binary": ("label1", "label2")}
BINARY_FOLDER = "label"
#: Sub-folders a dataset folder may hold its splits in, each with the layout.
SPLIT_FOLDERS = ("train", "val", "test")


@dataclass(frozen=True)
class Prediction:
    """One pair's prediction: masked classes of each date (0 = no change; ``None`` for binary) and 0/1 change."""

    name: str
    sem_t1: np.ndarray | None
    sem_t2: np.ndarray | None
    change: np.ndarray


def check_compatible(card: ModelCard, dataset: ChangeDataset) -> None:
    """Refuse a model whose band count or (semantic) classes do not match the dataset's."""
    if dataset.bands and dataset.bands != len(card.bands_t1):
        raise InputError(f"the model takes {len(card.bands_t1)} bands per date but the images of the dataset "
                         f"({dataset.samples[0].t1} ...) have {dataset.bands}; use a model trained on these bands")
    if card.task == "semantic" and dataset.task == "semantic" and card.num_classes != len(dataset.classes):
        raise InputError(f"the model has {card.num_classes} classes ({', '.join(card.class_names)}) but the "
                         f"{dataset.format} data has {len(dataset.classes)}; use a model trained for this dataset")


def _progress(items: Iterable[Any], total: int, label: str) -> Iterable[Any]:
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional
        return items
    return tqdm(items, total=total, desc=label, unit="pair", disable=not sys.stderr.isatty(), leave=False)


def engine_predictions(model: tuple[nn.Module, ModelCard], dataset: ChangeDataset, *, device: str = "auto",
                       batch_size: int = 4, backend: str = "auto", precision: str = "auto") -> Iterator[Prediction]:
    """Run each pair of ``dataset`` through the engine and yield its prediction (in dataset order)."""
    card = model[1]
    # never int8: scores must not depend on the CPU, and each pair would be calibrated and checked again
    # the pair's pictures hold the model's bands in the model's order, whatever band numbers its card names
    bands = tuple(range(1, len(card.bands_t1) + 1))
    options = RunOptions(device=device, batch_size=batch_size, backend=backend, precision=precision, int8=False,
                         bands_t1=bands, bands_t2=bands)
    scratch = Path(tempfile.mkdtemp(prefix="scd-evaluate-"))
    try:
        for sample in _progress(dataset.samples, len(dataset.samples), "predicting"):
            pair_dir = scratch / "pair"
            pair_dir.mkdir()
            t1 = write_geotiff(pair_dir / "t1.tif", read_pixels(sample.t1))
            t2 = write_geotiff(pair_dir / "t2.tif", read_pixels(sample.t2))
            if card.task == "semantic":
                outputs = OutputPaths(t1_classes=pair_dir / "c1.tif", t2_classes=pair_dir / "c2.tif",
                                      change_mask=pair_dir / "change.tif")
            else:
                outputs = OutputPaths(change_mask=pair_dir / "change.tif")
            run_change_detection(t1, t2, model, outputs, options)
            change = _read_band(pair_dir / "change.tif")
            sem1 = sem2 = None
            if card.task == "semantic":
                sem1, sem2 = _read_band(pair_dir / "c1.tif"), _read_band(pair_dir / "c2.tif")
            shutil.rmtree(pair_dir)
            yield Prediction(sample.name, sem1, sem2, (change == 1).astype(np.uint8))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _read_band(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        values = src.read(1)
        if src.nodata is not None:
            values = np.where(values == src.nodata, 0, values)
    return values.astype(np.int64)


def prediction_task(folder: str | os.PathLike[str], dataset: ChangeDataset) -> tuple[Path, str]:
    """Where the predictions of ``dataset``'s pairs are under ``folder`` and whether they are semantic."""
    return _prediction_folder(folder, dataset.format)


def _prediction_folder(folder: str | os.PathLike[str], format: str) -> tuple[Path, str]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: prediction folder not found")
    semantic_data = bool(CLASSES[format])
    semantic = SEMANTIC_FOLDERS[format]
    for base in (folder, *(folder / s for s in SPLIT_FOLDERS)):
        if semantic_data and all((base / name).is_dir() for name in semantic):
            return base, "semantic"
        if (base / BINARY_FOLDER).is_dir():
            return base, "binary"
        if all((base / name).is_dir() for name in semantic):
            return base, "semantic"
    raise InputError(f"{folder}: expected prediction folders {'/ '.join(semantic)}/ (semantic) or "
                     f"{BINARY_FOLDER}/ (binary change), as `predict` writes them")


@dataclass(frozen=True)
class PredictedPairs:
    """The pairs a prediction folder holds predictions for, within one dataset folder."""

    split: str  # the split of the dataset folder they belong to: "all" (a folder without splits) or its sub-folder
    names: tuple[str, ...]
    present: int  # pairs in the dataset folder, every split together


def pairs_present(data: str | os.PathLike[str], format: str) -> dict[str, list[str]]:
    """The pairs of a dataset folder by split: ``{"all": [...]}`` for one layout, else one entry per split folder."""
    root = Path(data)
    try:
        return {"all": [s.name for s in list_samples(root, format, "all", labels=False)]}
    except InputError:
        pass  # no layout of its own: the splits are sub-folders
    present = {}
    for split in SPLIT_FOLDERS:
        if (root / split).is_dir():
            try:
                present[split] = [s.name for s in list_samples(root / split, format, "all", labels=False)]
            except InputError:
                continue
    return present


def predicted_pairs(folder: str | os.PathLike[str], data: str | os.PathLike[str], format: str) -> PredictedPairs:
    """The pairs of ``data`` that ``folder`` holds predictions for (``evaluate --pred`` without ``--split``).

    Raises:
        InputError: A prediction names no pair of ``data``, the predictions belong to several split folders, or
            the folder holds none; the message names the file or says which ``--split`` to give.
    """
    base, task = _prediction_folder(folder, format)
    folders = [base / name for name in SEMANTIC_FOLDERS[format]] if task == "semantic" else [base / BINARY_FOLDER]
    predicted = {path.stem: path for sub in folders for path in sorted(sub.iterdir())
                 if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")}
    if not predicted:
        raise InputError(f"{base}: no predictions in {', '.join(f.name + '/' for f in folders)}")
    present = pairs_present(data, format)
    holders = [split for split, names in present.items() if predicted.keys() & set(names)]
    if len(holders) > 1:
        raise InputError(f"{folder}: predictions of pairs in {' and '.join(f'{h}/' for h in holders)} of {data}; "
                         "give --split to score one of them")
    known = set(present[holders[0]]) if holders else set()
    unknown = sorted(predicted.keys() - known)
    if unknown:
        raise InputError(f"{predicted[unknown[0]]}: a prediction for the pair {unknown[0]}, but {data} has no pair of "
                         f"that name ({len(unknown)} such file(s)); check --pred and --data")
    return PredictedPairs(holders[0], tuple(sorted(predicted)), sum(len(names) for names in present.values()))


def _find(folder: Path, name: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"{name}{suffix}").is_file():
            return folder / f"{name}{suffix}"
    raise InputError(f"{folder}: no prediction named {name}.png for the pair {name}")


def folder_predictions(folder: str | os.PathLike[str], dataset: ChangeDataset) -> Iterator[Prediction]:
    """Predictions read from a folder in the dataset layout (palette or RGB colour PNGs, or 0/255 masks)."""
    base, task = prediction_task(folder, dataset)
    if task == "semantic" and dataset.task != "semantic":
        raise InputError(f"{folder}: semantic predictions, but the data is binary; score their change with a "
                         f"{BINARY_FOLDER}/ folder of 0/255 masks")
    for sample in dataset.samples:
        if task == "binary":
            path = _find(base / BINARY_FOLDER, sample.name)
            change = decode_binary(read_image(path), path).astype(np.int64)
            yield Prediction(sample.name, None, None, change)
            continue
        maps = []
        for name in SEMANTIC_FOLDERS[dataset.format]:
            path = _find(base / name, sample.name)
            maps.append(decode_palette(read_image(path), dataset.palette, path))
        change = ((maps[0] > 0) | (maps[1] > 0)).astype(np.int64)
        yield Prediction(sample.name, maps[0], maps[1], change)


def score(dataset: ChangeDataset, predictions: Iterable[Prediction]) -> dict[str, float]:
    """SECOND-protocol (semantic) or binary scores of ``predictions`` against ``dataset``'s labels.

    Semantic predictions on semantic data give the semantic metrics plus the change-class ``precision``,
    ``recall``, ``f1`` and ``iou`` of the change mask; anything else gives the binary metrics of the change.
    Pixels without a label (``valid`` 0) are left out.
    """
    semantic = SemanticConfusion(len(dataset.classes), [c.name for c in dataset.classes]) \
        if dataset.task == "semantic" else None
    binary = BinaryConfusion()
    used_semantic = False
    count = 0
    for index, prediction in enumerate(predictions):
        sample = dataset.samples[index]
        if prediction.name != sample.name:
            raise RuntimeError(f"prediction {prediction.name} arrived for pair {sample.name}")
        labels = dataset.read_pair(index)[2]
        valid = labels[-1] > 0
        if prediction.change.shape != valid.shape:
            raise InputError(f"the prediction of {sample.name} is {prediction.change.shape[1]} x "
                             f"{prediction.change.shape[0]} px, but its images are {valid.shape[1]} x "
                             f"{valid.shape[0]} px")
        if dataset.task == "semantic":
            truth1, truth2 = labels[0], labels[1]
            truth_change = ((truth1 > 0) | (truth2 > 0)).astype(np.int64)
            if prediction.sem_t1 is not None and semantic is not None:
                used_semantic = True
                semantic.update(prediction.sem_t1, np.where(valid, truth1, IGNORE_INDEX))
                semantic.update(prediction.sem_t2, np.where(valid, truth2, IGNORE_INDEX))
        else:
            truth_change = labels[0]
        binary.update(prediction.change, np.where(valid, truth_change, IGNORE_INDEX))
        count += 1
    if count != len(dataset.samples):
        raise RuntimeError(f"{count} predictions for {len(dataset.samples)} pairs")
    if used_semantic and semantic is not None:
        scores = semantic.compute()
        change = binary.compute()
        scores.update({key: change[key] for key in ("precision", "recall", "f1", "iou")})
        return scores
    return binary.compute()


#: Table rows: key, label.
_ROWS = [
    ("oa", "OA, mean per image (as the papers report it)"),
    ("oa_global", "OA, global confusion matrix"),
    ("miou", "mIoU (no change / change)"),
    ("sek", "SeK"),
    ("f_scd", "F_scd"),
    ("precision_scd", "  precision within change"),
    ("recall_scd", "  recall within change"),
    ("kappa", "kappa"),
    ("kappa_nc", "kappa without no-change agreement"),
    ("score", "SECOND score (0.3 mIoU + 0.7 SeK)"),
    ("precision", "change precision"),
    ("recall", "change recall"),
    ("f1", "change F1"),
    ("iou", "change IoU"),
    ("iou_unchanged", "no-change IoU"),
]


def format_table(scores: dict[str, float], title: str) -> str:
    """A readable table of :func:`score`'s output, in percent."""
    lines = [title]
    width = max(len(label) for _, label in _ROWS)
    shown = set()
    for key, label in _ROWS:
        if key in scores:
            lines.append(f"  {label:<{width}}  {100 * scores[key]:6.2f} %")
            shown.add(key)
    per_class = [k for k in scores if k.startswith("iou_") and k not in shown and k not in ("iou_nc", "iou_c")]
    if per_class:
        lines.append("  IoU per class:")
        for key in per_class:
            lines.append(f"    {key[4:].replace('_', ' '):<{width - 2}}  {100 * scores[key]:6.2f} %")
    return "\n".join(lines) + "\n"
