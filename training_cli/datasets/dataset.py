"""The training/evaluation dataset: pairs of images and labels as tensors, cropped.

Every item is a dict of tensors, the same for every format, so the trainer never
branches on the dataset:

* ``t1``, ``t2``: float32 ``[C, H, W]``, each date normalised with its own mean
  and standard deviation (given in 0..255 units, as in the model card);
* ``change``: float32 ``[1, H, W]``, 1 where something changed;
* ``valid``: float32 ``[1, H, W]``, 0 where there is no label (Landsat-SCD's
  blank areas, padding of images smaller than the crop), 1 elsewhere;
* ``sem_t1``, ``sem_t2`` (semantic formats only): int64 ``[H, W]``, the
  land-cover class 1..N of each date inside change, 0 = no change;
* ``name``: the pair's file stem, with ``@row_col`` of the crop when cropped.

With ``crop`` each image is cut into a grid of ``crop x crop`` windows that
covers it completely (the last row and column of windows shifted back inside
the image when its size is not a multiple of the crop; images smaller than the
crop are padded), and every window is an item: an epoch sees every pixel, as
the papers' pre-cut patches do.

Items are not augmented here: the trainer's flips and rotations
(:mod:`training_cli.augment`) are seeded per run, epoch and item, which its exact
resume relies on, and move both dates, every label and ``valid`` together.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional
from torch.utils.data import Dataset

from core.errors import InputError
from core.models.card import LANDSAT_SCD_CLASSES, SECOND_CLASSES, LandCoverClass

from .layouts import Sample
from .reading import INVALID, decode_binary, decode_landsat_fromto, decode_palette, read_image, read_rgb

NO_CHANGE_COLOUR = (255, 255, 255)

#: Land-cover classes 1..N per semantic format (class 0 is "no change").
CLASSES: dict[str, tuple[LandCoverClass, ...]] = {"second": SECOND_CLASSES, "landsat-scd": LANDSAT_SCD_CLASSES,
                                                  "binary": ()}


def image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of an image from its header."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(path) as src:
                    return src.height, src.width
        except rasterio.errors.RasterioIOError as error:
            raise InputError(f"{path}: cannot be read as an image ({error})") from None
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.height, image.width
    except Exception as error:  # noqa: BLE001 - a broken file becomes a message naming it
        raise InputError(f"{path}: cannot be read as an image ({error})") from None


def crop_starts(length: int, crop: int) -> list[int]:
    """Window starts covering ``0..length`` with windows of ``crop``; the last one ends at ``length``."""
    if length <= crop:
        return [0]
    count = math.ceil(length / crop)
    return [round(i * (length - crop) / (count - 1)) for i in range(count)]


class ChangeDataset(Dataset):
    """Pairs of one split of one dataset layout (see the module docstring for the items).

    Args:
        samples: The pairs (from :func:`training_cli.datasets.layouts.list_samples`).
        format: ``second``, ``landsat-scd`` or ``binary``.
        crop: Window size, or ``None`` for whole images.
        mean_t1, std_t1, mean_t2, std_t2: Per-band normalisation of each date, in 0..255 units.
        resize: Resize every pair to ``resize x resize`` first (Landsat-SCD: 416 -> 512 as LSAFNet does);
            bilinear for images, nearest for labels.
        mask_invalid: Landsat-SCD: pixels white (255) in every band of both dates carry no label.
    """

    def __init__(self, samples: Sequence[Sample], format: str, *, crop: int | None = None,
                 mean_t1: Sequence[float], std_t1: Sequence[float], mean_t2: Sequence[float],
                 std_t2: Sequence[float], resize: int | None = None, mask_invalid: bool = True) -> None:
        self.samples = list(samples)
        self.format = format
        self.classes = CLASSES[format]
        self.task = "semantic" if self.classes else "binary"
        self.crop = crop
        self.resize = resize
        self.mask_invalid = mask_invalid and format == "landsat-scd"
        self.mean = [np.asarray(m, np.float32)[:, None, None] for m in (mean_t1, mean_t2)]
        self.std = [np.asarray(s, np.float32)[:, None, None] for s in (std_t1, std_t2)]
        if crop is not None and crop < 1:
            raise InputError(f"crop must be a positive size, got {crop}")
        self.sizes = [self._check_sizes(sample) for sample in self.samples]
        self.windows: list[tuple[int, int, int]] = []
        for index, (height, width) in enumerate(self.sizes):
            if resize:
                height = width = resize
            if crop is None:
                self.windows.append((index, 0, 0))
            else:
                self.windows += [(index, r, c) for r in crop_starts(height, crop) for c in crop_starts(width, crop)]

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        """Colours of classes 0..N (0 = no change, white), as the dataset's colour labels use them."""
        return (NO_CHANGE_COLOUR, *(c.color for c in self.classes))

    @staticmethod
    def _check_sizes(sample: Sample) -> tuple[int, int]:
        size = image_size(sample.t1)
        for path in (sample.t2, *sample.labels):
            other = image_size(path)
            if other != size:
                raise InputError(f"{path}: {other[1]} x {other[0]} px, but {sample.t1} is {size[1]} x {size[0]} px; "
                                 "both dates and the labels of a pair must have the same size")
        return size

    def __len__(self) -> int:
        return len(self.windows)

    def read_pair(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw images (float32 ``[C, H, W]`` each) and label planes (int64 ``[K, H, W]``) of pair ``index``.

        Label planes: ``sem_t1, sem_t2, valid`` for semantic formats, ``change, valid`` for binary.
        """
        sample = self.samples[index]
        image1, image2 = read_rgb(sample.t1), read_rgb(sample.t2)
        for path, image in ((sample.t1, image1), (sample.t2, image2)):
            if image.shape[0] != self.mean[0].shape[0]:
                raise InputError(f"{path}: {image.shape[0]} bands, but the normalisation has "
                                 f"{self.mean[0].shape[0]} values per date")
        height, width = image1.shape[1:]
        valid = np.ones((height, width), np.int64)
        if self.mask_invalid:
            valid[np.all(image1 == 255, axis=0) & np.all(image2 == 255, axis=0)] = 0
        planes = self._labels(sample, (height, width))
        if planes is not None:
            for plane in planes:
                valid[plane == INVALID] = 0
            planes = [np.where(valid > 0, plane, 0) for plane in planes]
        else:
            planes = [np.zeros((height, width), np.int64)] * (2 if self.task == "semantic" else 1)
        labels = np.stack([*planes, valid])
        return image1.astype(np.float32), image2.astype(np.float32), labels

    def _labels(self, sample: Sample, size: tuple[int, int]) -> list[np.ndarray] | None:
        if sample.label_kind == "none":
            return None
        raw = [read_image(path) for path in sample.labels]
        if sample.label_kind == "binary":
            return [decode_binary(raw[0], sample.labels[0]).astype(np.int64)]
        if sample.label_kind == "fromto":
            return list(decode_landsat_fromto(raw[0], sample.labels[0]))
        invalid = (0, 0, 0) if self.format == "landsat-scd" else None
        return [decode_palette(label, self.palette, path, invalid) for label, path in
                zip(raw, sample.labels, strict=True)]

    def __getitem__(self, item: int) -> dict[str, torch.Tensor | str]:
        index, row, col = self.windows[item]
        image1, image2, labels = self.read_pair(index)
        images = np.concatenate([image1, image2])
        if self.resize:
            images, labels = _resize(images, labels, self.resize)
        name = self.samples[index].name
        if self.crop is not None:
            images, labels = self._crop(images, labels, row, col)
            name = f"{name}@{row}_{col}"
        bands = image1.shape[0]
        t1 = (images[:bands] - self.mean[0]) / self.std[0]
        t2 = (images[bands:] - self.mean[1]) / self.std[1]
        valid = labels[-1]
        item_dict: dict[str, torch.Tensor | str] = {
            "t1": torch.from_numpy(np.ascontiguousarray(t1, np.float32)),
            "t2": torch.from_numpy(np.ascontiguousarray(t2, np.float32)),
            "valid": torch.from_numpy(np.ascontiguousarray(valid[None], np.float32)),
            "name": name,
        }
        if self.task == "semantic":
            sem1, sem2 = (np.ascontiguousarray(p, np.int64) for p in labels[:2])
            item_dict["sem_t1"], item_dict["sem_t2"] = torch.from_numpy(sem1), torch.from_numpy(sem2)
            change = (sem1 > 0) | (sem2 > 0)
        else:
            change = labels[0] > 0
        item_dict["change"] = torch.from_numpy(change[None].astype(np.float32))
        return item_dict

    def _crop(self, images: np.ndarray, labels: np.ndarray, row: int, col: int) -> tuple[np.ndarray, np.ndarray]:
        crop = self.crop
        assert crop is not None
        images, labels = images[:, row:row + crop, col:col + crop], labels[:, row:row + crop, col:col + crop]
        pad_h, pad_w = crop - images.shape[1], crop - images.shape[2]
        if pad_h or pad_w:
            # pad with each band's mean (0 after normalisation) and "no label"
            mean = np.concatenate(self.mean)
            padded = np.broadcast_to(mean, (images.shape[0], crop, crop)).copy()
            padded[:, :images.shape[1], :images.shape[2]] = images
            images = padded
            labels = np.pad(labels, ((0, 0), (0, pad_h), (0, pad_w)))
        return images, labels


def _resize(images: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    if images.shape[1:] == (size, size):
        return images, labels
    image_t = functional.interpolate(torch.from_numpy(images)[None], size=(size, size), mode="bilinear",
                                     align_corners=False)[0]
    label_t = functional.interpolate(torch.from_numpy(labels.astype(np.float32))[None], size=(size, size),
                                     mode="nearest")[0]
    return image_t.numpy(), label_t.numpy().astype(np.int64)

