"""Bring raw pixels of any data type to what a network was trained on.

8-bit bands are taken as they are. Other types are stretched linearly to 0..255,
either over the range the model card declares or between per-band percentiles of
the scene (computed once, from a decimated read of the whole processing area, so
that every tile is scaled identically and no seam appears). Then each date is
normalised with its own per-band mean and standard deviation from the card.
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


def plan_scaling(
    dtypes: Sequence[str],
    sample: np.ndarray,
    valid: np.ndarray,
    scaling: InputScaling,
    mean: Sequence[float],
    std: Sequence[float],
) -> BandScaling:
    """Decide how to scale one date's bands.

    Args:
        dtypes: GDAL/numpy data type name of each selected band.
        sample: Decimated pixels ``[bands, h, w]`` of the processing area.
        valid: Where ``sample`` holds valid data.
        scaling: The model card's rule for non-8-bit data.
        mean: Per-band mean in 0..255 units.
        std: Per-band standard deviation in 0..255 units.
    """
    bands = len(dtypes)
    offset = np.zeros(bands, dtype=np.float32)
    factor = np.ones(bands, dtype=np.float32)
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
