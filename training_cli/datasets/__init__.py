"""Change-detection datasets in their released layouts, as one kind of item for the trainer.

``open_dataset(root)`` finds the layout (SECOND, Landsat-SCD or binary CD), the
pairs of the split, checks that every pair is complete and consistent, and
returns a :class:`~training_cli.datasets.dataset.ChangeDataset` whose items are
dicts of tensors (``t1``, ``t2``, ``change``, ``valid``, ``name`` and, for the
semantic sets, ``sem_t1``, ``sem_t2``). See ``docs/training.md`` for the layouts.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence

from core.models.card import PRESETS

from .dataset import CLASSES, ChangeDataset
from .layouts import FORMATS, Sample, detect_format, list_samples

__all__ = ["CLASSES", "FORMATS", "ChangeDataset", "Sample", "detect_format", "list_samples", "open_dataset"]

#: Model-card preset whose normalisation a format uses by default.
PRESET_OF_FORMAT = {"second": "second", "landsat-scd": "landsat-scd", "binary": "binary"}


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
        mean, std: Per-band normalisation in 0..255 units of T1 (and of T2 unless ``mean_t2``/``std_t2`` are
            given); default: the format's preset (SECOND and Landsat-SCD statistics, ImageNet for binary).
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
    preset = PRESETS[PRESET_OF_FORMAT[format]]
    mean_t1 = tuple(mean) if mean is not None else preset.mean_t1
    std_t1 = tuple(std) if std is not None else preset.std_t1
    if mean_t2 is None:
        mean_t2 = mean_t1 if mean is not None else preset.mean_t2
    if std_t2 is None:
        std_t2 = std_t1 if std is not None else preset.std_t2
    return ChangeDataset(samples, format, crop=crop, mean_t1=mean_t1, std_t1=std_t1,
                         mean_t2=mean_t2, std_t2=std_t2, resize=resize)
