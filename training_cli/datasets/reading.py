"""Reading dataset images and decoding labels, with errors that name the file.

Images are PNG/JPEG/BMP (read with Pillow) or GeoTIFF (read with rasterio);
either way they come back as ``[bands, H, W]`` arrays in their own data type.
Labels are decoded into class indices:

* semantic labels given as RGB colour maps go through the dataset's palette;
  a colour outside it is an error naming the file, the colour and where it is;
* semantic labels given as single-band index maps must hold 0..N;
* binary labels must hold 0/255 (0/1 is accepted too) and become 0/1;
* Landsat-SCD's released single from-to map (codes 0..9) splits into the two
  per-date maps.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.metrics import IGNORE_INDEX as INVALID

RGB = tuple[int, int, int]


#: File endings read as images or labels.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_RASTERIO_SUFFIXES = (".tif", ".tiff")

#: Landsat-SCD's from-to codes (0 = no change, 1..9) to the class of each date
#: (1 farmland, 2 desert, 3 building, 4 water): farmland->desert, farmland->building,
#: desert->farmland, desert->building, desert->water, building->farmland,
#: building->desert, water->farmland, water->desert.
LANDSAT_FROM = np.array([0, 1, 1, 2, 2, 2, 3, 3, 4, 4], dtype=np.int64)
LANDSAT_TO = np.array([0, 2, 3, 1, 3, 4, 1, 2, 1, 2], dtype=np.int64)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image as ``[bands, H, W]`` (its own dtype); palette images are expanded to RGB.

    Raises:
        InputError: The file is missing or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        if path.suffix.lower() in _RASTERIO_SUFFIXES:
            import rasterio
            from rasterio.errors import NotGeoreferencedWarning

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(path) as src:
                    return src.read()
        from PIL import Image

        with Image.open(path) as image:
            if image.mode in ("P", "PA", "CMYK", "YCbCr", "LA"):
                image = image.convert("RGBA" if "A" in image.mode else "RGB")
            array = np.asarray(image)
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001 - any decoder failure becomes a message naming the file
        raise InputError(f"{path}: cannot be read as an image ({error})") from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def read_pixels(path: str | os.PathLike[str]) -> np.ndarray:
    """The image bands of a dataset picture, ``[bands, H, W]``, in the units a network is normalised in.

    A PNG's alpha band is left out (RGBA -> RGB), and so is a GeoTIFF band whose colour interpretation is
    alpha; every other band is kept, so a GeoTIFF holds any number of bands (``prepare --bands-t1 4,3,2,8``).
    A GeoTIFF band that declares a scale or offset (GDAL's ``value = raw * scale + offset``, e.g. a
    reflectance scale of 0.0001) is returned with it applied, as float32, the way the engine reads it.

    Raises:
        InputError: The file is missing or cannot be decoded.
    """
    path = Path(path)
    if path.suffix.lower() not in _RASTERIO_SUFFIXES:
        image = read_image(path)
        return image[:3] if image.shape[0] == 4 else image
    image = read_image(path)
    alpha, scales, offsets = _tiff_band_facts(path)
    keep = [band for band in range(image.shape[0]) if not alpha[band]]
    if all((scales[b], offsets[b]) in ((1.0, 0.0), (0.0, 0.0)) for b in keep):
        return image[keep] if len(keep) < image.shape[0] else image
    pixels = image[keep].astype(np.float32)
    for index, band in enumerate(keep):
        pixels[index] = pixels[index] * np.float32(scales[band] or 1.0) + np.float32(offsets[band])
    return pixels


def image_shape(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """``(bands, height, width)`` of a dataset picture from its header, bands counted as :func:`read_pixels` gives
    them (alpha left out, a palette image as three colour bands).

    Raises:
        InputError: The file cannot be read as an image.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in _RASTERIO_SUFFIXES:
            import rasterio
            from rasterio.enums import ColorInterp
            from rasterio.errors import NotGeoreferencedWarning

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(path) as src:
                    bands = sum(1 for c in src.colorinterp if c != ColorInterp.alpha)
                    return bands, src.height, src.width
        from PIL import Image

        with Image.open(path) as image:
            count = len(image.getbands())
            bands = 3 if image.mode in ("P", "PA", "CMYK", "YCbCr", "LA", "RGBA") else count
            return bands, image.height, image.width
    except Exception as error:  # noqa: BLE001 - a broken file becomes a message naming it
        if not path.is_file():
            raise InputError(f"{path}: file not found") from None
        raise InputError(f"{path}: cannot be read as an image ({error})") from None


def _tiff_band_facts(path: Path) -> tuple[list[bool], list[float], list[float]]:
    """Per band of a GeoTIFF: whether it is alpha, its scale and its offset."""
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return ([c == ColorInterp.alpha for c in src.colorinterp], [float(v) for v in src.scales],
                    [float(v) for v in src.offsets])


def decode_palette(label: np.ndarray, palette: Sequence[RGB], path: str | os.PathLike[str],
                   invalid: RGB | None = None) -> np.ndarray:
    """Class indices ``[H, W]`` (int64) of an RGB colour map; ``palette[k]`` is the colour of class ``k``.

    A single-band label is taken as an index map and must hold 0..len(palette)-1.
    Pixels of colour ``invalid`` (e.g. the black that marks Landsat-SCD's blank
    areas) become :data:`INVALID`.

    Raises:
        InputError: A colour (or index) outside the palette, naming the file and a pixel that has it.
    """
    if label.shape[0] == 1 or (label.shape[0] >= 3 and _is_grey(label)):
        indices = label[0].astype(np.int64)
        bad = (indices < 0) | (indices >= len(palette))
        if bad.any():
            if label.shape[0] == 1:
                row, col = np.argwhere(bad)[0]
                raise InputError(f"{path}: label value {indices[row, col]} at row {row}, column {col} is not a class "
                                 f"index 0..{len(palette) - 1} (nor a palette colour)")
        else:
            return indices
    if label.shape[0] < 3:
        raise InputError(f"{path}: a label must be an RGB colour map or a single-band index map, "
                         f"found {label.shape[0]} bands")
    rgb = label[:3].astype(np.int64)
    codes = (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]
    colours = [*palette, invalid] if invalid is not None else list(palette)
    keys = np.array([(r << 16) | (g << 8) | b for r, g, b in colours], dtype=np.int64)
    order = np.argsort(keys)
    position = np.searchsorted(keys[order], codes).clip(0, len(keys) - 1)
    found = keys[order][position] == codes
    if not found.all():
        row, col = np.argwhere(~found)[0]
        colour = tuple(int(v) for v in rgb[:, row, col])
        known = ", ".join(f"{k}={c}" for k, c in enumerate(palette))
        raise InputError(f"{path}: label colour {colour} at row {row}, column {col} is not in the palette ({known}); "
                         "is this the right dataset format?")
    indices = order[position].astype(np.int64)
    if invalid is not None:
        indices[indices == len(palette)] = INVALID
    return indices


def _is_grey(label: np.ndarray) -> bool:
    return bool(np.array_equal(label[0], label[1]) and np.array_equal(label[0], label[2]))


def decode_binary(label: np.ndarray, path: str | os.PathLike[str]) -> np.ndarray:
    """0/1 change ``[H, W]`` (uint8) from a 0/255 (or 0/1) label.

    Raises:
        InputError: Another value, or an RGB label whose bands differ.
    """
    if label.shape[0] >= 3 and not _is_grey(label[:3]):
        raise InputError(f"{path}: a binary label must be one band (or grey RGB) holding 0 and 255")
    values = label[0]
    present = np.unique(values)
    if set(present.tolist()) <= {0, 255}:
        return (values == 255).astype(np.uint8)
    if set(present.tolist()) <= {0, 1}:
        return values.astype(np.uint8)
    odd = [v for v in present.tolist() if v not in (0, 1, 255)][:5]
    raise InputError(f"{path}: a binary change label must hold only 0 (unchanged) and 255 (changed), found {odd}; "
                     "was it saved with lossy compression or resampled?")


def decode_landsat_fromto(label: np.ndarray, path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """The two per-date maps ``[H, W]`` of Landsat-SCD's single from-to label (codes 0..9).

    Raises:
        InputError: A code outside 0..9.
    """
    codes = label[0].astype(np.int64)
    bad = (codes < 0) | (codes >= len(LANDSAT_FROM))
    if label.shape[0] != 1 and not _is_grey(label[:3]):
        raise InputError(f"{path}: Landsat-SCD's from-to label must be a single-band map of codes 0..9")
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(f"{path}: from-to code {codes[row, col]} at row {row}, column {col} is not one of 0..9")
    return LANDSAT_FROM[codes], LANDSAT_TO[codes]


def write_label_png(path: str | os.PathLike[str], indices: np.ndarray, palette: Sequence[RGB] | None) -> Path:
    """Write a prediction as a PNG: an indexed-colour (palette) image, or 0/255 grey when ``palette`` is None.

    Palette PNGs keep the class index as the pixel value and show the dataset's colours; readers that expand
    palettes (most imaging libraries) see the same RGB colours as the dataset's own labels.
    """
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette is None:
        image = Image.fromarray((np.asarray(indices) > 0).astype(np.uint8) * 255, mode="L")
    else:
        image = Image.fromarray(np.asarray(indices).astype(np.uint8), mode="P")
        flat = [v for colour in palette for v in colour]
        image.putpalette(flat + [0] * (768 - len(flat)))
    image.save(path)
    return path
