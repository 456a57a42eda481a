"""The training/evaluation dataset: pairs of images and labels as tensors, cropped.

Every item is a dict of tensors, the same for every format, so the trainer never
branches on the dataset:

* ``t1``, ``t2``: float32 ``[C, H, W]`` (any number of bands ``C``, the same in every
  pair), each date normalised with its own mean and standard deviation (in the
  units of the images: 0..255 for 8-bit pictures, the imagery's own for GeoTIFF
  reflectance; as in the model card);
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
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional
from torch.utils.data import Dataset

from core.errors import InputError
from core.models.card import LANDSAT_SCD_CLASSES, SECOND_CLASSES, LandCoverClass

from .layouts import Sample
from .reading import INVALID, decode_binary, decode_landsat_fromto, decode_palette, image_shape, read_image, read_pixels

NO_CHANGE_COLOUR = (255, 255, 255)

#: Land-cover classes 1..N per semantic format (class 0 is "no change").
CLASSES: dict[str, tuple[LandCoverClass, ...]] = {"second": SECOND_CLASSES, "landsat-scd": LANDSAT_SCD_CLASSES,
                                                  "binary": ()}


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
        mean_t1, std_t1, mean_t2, std_t2: Per-band normalisation of each date, in the images' units (one value
            per band).
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
        shapes = [self._check_shapes(sample) for sample in self.samples]
        self.sizes = [size for _, size in shapes]
        #: Bands per date, the same in every pair (0 for a dataset without pairs).
        self.bands = shapes[0][0] if shapes else 0
        for sample, (bands, _) in zip(self.samples, shapes, strict=True):
            if bands != self.bands:
                raise InputError(f"{sample.t1}: {bands} bands, but {self.samples[0].t1} has {self.bands}; every "
                                 "pair of a dataset must have the same bands")
        for label, values in (("T1", mean_t1), ("T2", mean_t2)):
            if shapes and len(values) != self.bands:
                raise InputError(f"the {label} normalisation has {len(values)} values per band, but the images "
                                 f"({self.samples[0].t1} ...) have {self.bands} bands; give one mean and one "
                                 "standard deviation per band (the model card's, or statistics of this data)")
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
    def _check_shapes(sample: Sample) -> tuple[int, tuple[int, int]]:
        """Bands per date and ``(height, width)`` of a pair, refusing dates of different band counts or sizes."""
        bands, *size = image_shape(sample.t1)
        bands_t2, *size_t2 = image_shape(sample.t2)
        if bands_t2 != bands:
            raise InputError(f"{sample.t2}: {bands_t2} bands, but its T1 {sample.t1} has {bands}; both dates must "
                             "have the same bands, in the same order")
        for path in (sample.t2, *sample.labels):
            other = size_t2 if path == sample.t2 else list(image_shape(path)[1:])
            if other != size:
                raise InputError(f"{path}: {other[1]} x {other[0]} px, but {sample.t1} is {size[1]} x {size[0]} px; "
                                 "both dates and the labels of a pair must have the same size")
        return bands, (size[0], size[1])

    def __len__(self) -> int:
        return len(self.windows)

    def read_pair(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw images (float32 ``[C, H, W]`` each) and label planes (int64 ``[K, H, W]``) of pair ``index``.

        Label planes: ``sem_t1, sem_t2, valid`` for semantic formats, ``change, valid`` for binary.
        """
        sample = self.samples[index]
        image1, image2 = read_pixels(sample.t1), read_pixels(sample.t2)
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

    def class_pixels(self) -> np.ndarray:
        """Pixels of each class 0..N in the labels of both dates over every pair (labels only: no image is read);
        pixels without a label are not counted."""
        counts = np.zeros(len(self.classes) + 1, np.int64)
        for sample, size in zip(self.samples, self.sizes, strict=True):
            planes = self._labels(sample, size) if self.task == "semantic" else None
            for plane in planes or ():
                labelled = plane[(plane >= 0) & (plane <= len(self.classes))]
                counts += np.bincount(labelled.ravel(), minlength=len(self.classes) + 1)
        return counts

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

