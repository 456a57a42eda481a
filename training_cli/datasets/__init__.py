"""Change-detection datasets in their released layouts, as one kind of item for the trainer.

``open_dataset(root)`` finds the layout (SECOND, Landsat-SCD or binary CD), the
pairs of the split, checks that every pair is complete and consistent, and
returns a :class:`~training_cli.datasets.dataset.ChangeDataset` whose items are
dicts of tensors (``t1``, ``t2``, ``change``, ``valid``, ``name`` and, for the
semantic sets, ``sem_t1``, ``sem_t2``). See ``docs/training.md`` for the layouts.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.models.card import PRESETS

from .dataset import CLASSES, ChangeDataset
from .layouts import FORMATS, Sample, detect_format, list_samples
from .reading import image_shape, read_pixels

__all__ = ["CLASSES", "FORMATS", "ChangeDataset", "PreparedBands", "Sample", "dataset_bands", "detect_format",
           "is_eight_bit", "list_samples", "open_dataset", "prepared_bands"]

#: Model-card preset whose normalisation a format uses by default.
PRESET_OF_FORMAT = {"second": "second", "landsat-scd": "landsat-scd", "binary": "binary"}

#: The record ``prepare`` writes beside its tiles (inputs, options, bands and their training statistics).
PREPARE_RECORD = "prepare.json"


@dataclass(frozen=True)
class PreparedBands:
    """The bands of a training set written by ``prepare``, as its record names them.

    Attributes:
        bands_t1, bands_t2: Band numbers of the source rasters, in model order (the model's default bands).
        scaling: The model card's scaling method for such imagery (``"statistics"`` unless it is 8-bit).
        mean_t1, std_t1, mean_t2, std_t2: Per-band statistics of the training split, in the imagery's units.
        source: Where the statistics come from, in words.
        descriptions_t1, descriptions_t2: ``[description, colour interpretation]`` the source files give each
            band (empty when the record has none).
    """

    bands_t1: tuple[int, ...]
    bands_t2: tuple[int, ...]
    scaling: str
    mean_t1: tuple[float, ...]
    std_t1: tuple[float, ...]
    mean_t2: tuple[float, ...]
    std_t2: tuple[float, ...]
    source: str
    descriptions_t1: tuple[tuple[str, str], ...] = ()
    descriptions_t2: tuple[tuple[str, str], ...] = ()


def prepared_bands(root: str | os.PathLike[str]) -> PreparedBands | None:
    """The bands and statistics ``prepare`` recorded for ``root``; ``None`` for any other folder.

    Raises:
        InputError: The record is there but damaged.
    """
    path = Path(root) / PREPARE_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        statistics = record.get("statistics")
        if statistics is None:
            return None  # written before prepare recorded statistics: the set is treated as any other
        values = {key: tuple(float(v) for v in statistics[key]) for key in ("mean_t1", "std_t1", "mean_t2", "std_t2")}
        return PreparedBands(tuple(int(b) for b in record["bands_t1"]), tuple(int(b) for b in record["bands_t2"]),
                             str(record["scaling"]), **values,
                             source=f"computed by prepare on the {statistics.get('split', 'train')} split "
                                    f"({statistics.get('pixels', '?')} valid pixels)",
                             descriptions_t1=tuple(tuple(map(str, d)) for d in record.get("band_descriptions_t1", ())),
                             descriptions_t2=tuple(tuple(map(str, d)) for d in record.get("band_descriptions_t2", ())))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise InputError(f"{path} is damaged ({error.__class__.__name__}: {error}); run prepare again") from None


def dataset_bands(root: str | os.PathLike[str], format: str, split: str | os.PathLike[str] | None) -> int:
    """Bands per date of the images of a split (from the first pair's header)."""
    samples = list_samples(root, format, split, labels=False)
    return image_shape(samples[0].t1)[0]


def is_eight_bit(root: str | os.PathLike[str], format: str, split: str | os.PathLike[str] | None) -> bool:
    """Whether the images of a split are 8-bit pictures (the first pair decides)."""
    sample = list_samples(root, format, split, labels=False)[0]
    return all(read_pixels(path).dtype == np.uint8 for path in (sample.t1, sample.t2))


def open_dataset(
    root: str | os.PathLike[str],
    format: str | None = None,
    split: str | os.PathLike[str] | None = None,
    crop: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    *,
    mean_t2: Sequence[float] | None = None,
    std_t2: Sequence[float] | None = None,
    resize: int | None = None,
    labels: bool = True,
    names: Collection[str] | None = None,
) -> ChangeDataset:
    """The pairs of one split of a dataset folder.

    Args:
        root: Dataset folder (the layout directly, or ``train/ val/ test/`` sub-folders holding it).
        format: ``second``, ``landsat-scd`` or ``binary``; detected from the folders when omitted.
        split: ``train``, ``val``, ``test``, ``all``/``None`` (every pair), or a list file.
        crop: Window size (see :class:`ChangeDataset`); ``None`` gives whole images.
        mean, std: Per-band normalisation of T1 in the images' units (and of T2 unless ``mean_t2``/``std_t2``
            are given); default: the statistics ``prepare`` recorded for the folder, else the format's preset
            (SECOND and Landsat-SCD statistics, ImageNet for binary) when the images have its three bands, else
            none (mean 0, standard deviation 1: the values as they are).
        mean_t2, std_t2: T2's own normalisation.
        resize: Resize pairs to a square of this size first (Landsat-SCD 416 -> 512).
        labels: ``False`` opens a folder without labels (for ``predict``).
        names: Only the pairs of these names, in the split's order (``evaluate --pred``: the pairs a folder of
            predictions holds).

    Raises:
        core.errors.InputError: Layout, split or files are missing or inconsistent; the message names the file.
    """
    format = format or detect_format(root)
    samples = list_samples(root, format, split, labels=labels)
    if names is not None:
        wanted = set(names)
        samples = [sample for sample in samples if sample.name in wanted]
    default = prepared_bands(root) or PRESETS[PRESET_OF_FORMAT[format]]
    if mean is None and len(default.mean_t1) != image_shape(samples[0].t1)[0]:
        bands = image_shape(samples[0].t1)[0]
        default = dataclasses.replace(PRESETS[PRESET_OF_FORMAT[format]], mean_t1=(0.0,) * bands,
                                      std_t1=(1.0,) * bands, mean_t2=(0.0,) * bands, std_t2=(1.0,) * bands)
    mean_t1 = tuple(mean) if mean is not None else default.mean_t1
    std_t1 = tuple(std) if std is not None else default.std_t1
    if mean_t2 is None:
        mean_t2 = mean_t1 if mean is not None else default.mean_t2
    if std_t2 is None:
        std_t2 = std_t1 if std is not None else default.std_t2
    return ChangeDataset(samples, format, crop=crop, mean_t1=mean_t1, std_t1=std_t1,
                         mean_t2=mean_t2, std_t2=std_t2, resize=resize)
