"""Bring raw pixels of any data type to what a network was trained on.

How depends on the model card's :class:`~.models.card.InputScaling`:

* ``percentile`` / ``range`` (statistics in 0..255 units): 8-bit bands are taken as they are;
  other types are stretched linearly to 0..255, either over the range the card declares or
  between per-band percentiles of the scene (computed once, from a decimated read of the whole
  processing area, so that every tile is scaled identically and no seam appears).
* ``statistics`` (statistics in the imagery's own units, e.g. uint16 reflectance): every band
  is taken in its own units, the file's scale and offset applied where it declares them
  (GDAL's ``value = raw * scale + offset``), and never stretched or divided by 255.

Then each date is normalised with its own per-band mean and standard deviation from the card.
The same :class:`BandScaling` serves the engine and ``training_cli prepare``, so a training
set and a scene are scaled alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .models.card import InputScaling


@dataclass(frozen=True)
class BandScaling:
    """Per-band linear map ``(x - offset) * factor`` into 0..255 units, then normalisation."""

    offset: np.ndarray  # [bands]
    factor: np.ndarray  # [bands]
    clip: bool
    mean: np.ndarray
    std: np.ndarray
    description: str

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Scale and normalise a ``[bands, H, W]`` float32 array (in place where possible)."""
        image = image.astype(np.float32, copy=False)
        image -= self.offset[:, None, None]
        image *= self.factor[:, None, None]
        if self.clip:
            np.clip(image, 0.0, 255.0, out=image)
        image -= self.mean[:, None, None]
        image /= self.std[:, None, None]
        return image


#: A band whose typical value lies this many of the model's standard deviations from the model's mean, or
#: whose spread is this many times larger or smaller than the model's, is almost certainly in other units
#: than the training imagery (reflectance 0..1 against 0..10000), not merely of another season or place.
FAR_FROM_TRAINING = 10.0
OTHER_SPREAD = 100.0


def plan_scaling(
    dtypes: Sequence[str],
    sample: np.ndarray,
    valid: np.ndarray,
    scaling: InputScaling,
    mean: Sequence[float],
    std: Sequence[float],
    file_scales: Sequence[tuple[float, float]] | None = None,
) -> BandScaling:
    """Decide how to scale one date's bands.

    Args:
        dtypes: GDAL/numpy data type name of each selected band.
        sample: Decimated pixels ``[bands, h, w]`` of the processing area.
        valid: Where ``sample`` holds valid data.
        scaling: The model card's rule (see the module docstring).
        mean: Per-band mean in the units ``scaling`` names.
        std: Per-band standard deviation in those units.
        file_scales: ``(scale, offset)`` each band's file declares (GDAL's; ``None``: 1 and 0 for
            every band). Used by the ``statistics`` method only.
    """
    bands = len(dtypes)
    offset = np.zeros(bands, dtype=np.float32)
    factor = np.ones(bands, dtype=np.float32)
    if scaling.method == "statistics":
        declared = [(1.0, 0.0)] * bands if file_scales is None else list(file_scales)
        if len(declared) != bands:
            raise ValueError(f"{len(declared)} file scales given for {bands} bands")
        parts = []
        for band, (scale, shift) in enumerate(declared):
            scale = scale or 1.0  # GDAL reports 0 for "no scale" through some drivers
            offset[band], factor[band] = -shift / scale, scale
            if (scale, shift) != (1.0, 0.0):
                parts.append(f"band {band + 1} x {scale:g} + {shift:g}")
        description = "own units" + (f" (the file's scale and offset: {', '.join(parts)})" if parts else "") \
            + ", normalised by the model's statistics"
        return BandScaling(offset, factor, False, np.asarray(mean, np.float32), np.asarray(std, np.float32),
                           description)
    if all(np.dtype(d) == np.uint8 for d in dtypes):
        description = "8-bit, used as is"
        clip = False
    elif scaling.method == "range":
        offset[:] = scaling.minimum
        factor[:] = 255.0 / (scaling.maximum - scaling.minimum)
        description = f"linear {scaling.minimum:g}..{scaling.maximum:g} -> 0..255"
        clip = True
    else:
        if not valid.any():
            raise InputError("no valid pixel to compute the percentile stretch from; check the nodata settings")
        parts = []
        for band in range(bands):
            values = sample[band][valid]
            low, high = np.percentile(values, [scaling.low, scaling.high])
            if not high > low:
                high = low + 1.0
            offset[band], factor[band] = low, 255.0 / (high - low)
            parts.append(f"{low:.6g}..{high:.6g}")
        description = f"percentile {scaling.low:g}-{scaling.high:g} stretch per band ({', '.join(parts)}) -> 0..255"
        clip = True
    return BandScaling(offset, factor, clip, np.asarray(mean, np.float32), np.asarray(std, np.float32), description)


def far_from_training(plan: BandScaling, sample: np.ndarray, valid: np.ndarray, label: str) -> list[str]:
    """Warnings for bands whose typical scaled value lies far outside what the model was trained on.

    A Sentinel-2 model trained on 0..10000 reflectance given 0..1 floats (or an 8-bit model given
    uint16 data under a declared range) runs without error and draws nonsense; this says so.

    Args:
        plan: The date's scaling.
        sample: Raw pixels ``[bands, h, w]`` (as :func:`plan_scaling` got them).
        valid: Where ``sample`` holds valid data.
        label: The date, e.g. ``"T1 (a.tif)"``, for the message.
    """
    if not valid.any():
        return []
    warnings = []
    scaled = plan.apply(sample.astype(np.float32, copy=True))
    for band in range(sample.shape[0]):
        values, normalised = sample[band][valid], scaled[band][valid]
        typical, spread = float(np.median(normalised)), float(np.std(normalised))
        if abs(typical) > FAR_FROM_TRAINING or (spread > 0 and not 1 / OTHER_SPREAD < spread < OTHER_SPREAD):
            trained = plan.mean[band] / plan.factor[band] + plan.offset[band]
            trained_spread = plan.std[band] / plan.factor[band]
            warnings.append(
                f"{label}: input band {band + 1} has typical value {float(np.median(values)):.6g} and spread "
                f"{float(np.std(values)):.3g}, but the model was trained on {trained:.6g} +- {trained_spread:.3g}; "
                "the image is probably in other units (reflectance 0-1 against 0-10000, 8-bit against 16-bit) "
                "or the bands are not the model's. Give the imagery the model was trained on")
    return warnings
