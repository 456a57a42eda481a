"""Synthetic two-date scenes, so tests, the demo and benchmarks need no downloads.

Everything here is synthetic: procedurally generated, no real place, no real
sensor. Two generators:

* :func:`make_scene` / :func:`render` (engine tests): a land-cover map of smooth
  random blobs, T2 with some rectangles turned into other classes, rendered from
  the class palette plus noise. Trivial to classify, which is what engine tests
  want (known maps in, known maps out).
* :func:`make_landscape_pair` / :func:`render_landscape` (training, evaluation,
  demos, benchmarks): a landscape built like a real one (water in the low
  ground, streets and building blocks in urban zones, fields of low vegetation
  and trees elsewhere), T2 changed by realistic transitions (construction on
  bare ground and fields, demolition, clearing of vegetation, planting, a water
  level that rises or falls along the shores), rendered with textures whose
  colours are *not* the label palette and which resemble each other where real
  classes do (trees vs low vegetation, roofs vs bare ground), a season shift of
  the vegetation and an illumination change (gain, colour cast, gradient, haze)
  between dates, sensor noise, blur and a slight sub-pixel misregistration of T2.
  It is meant to be learnable but not trivially separable: neither the colour of
  a pixel nor the size of its T1-T2 difference gives its label.

Both write georeferenced GeoTIFFs in any CRS, resolution and data type, with
optional nodata borders (:func:`write_geotiff`, :func:`reproject_geotiff`);
:func:`write_dataset` writes a training set in a dataset layout and
:func:`write_scene` one large georeferenced scene pair with its ground truth.
Generation is vectorised numpy: a 2048 x 2048 pair takes a few seconds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import Resampling, calculate_default_transform, reproject

from .models.card import RGB, LandCoverClass


@dataclass(frozen=True)
class Scene:
    """Land-cover labels (1..N) of both dates; ``changed`` is where they differ."""

    labels_t1: np.ndarray
    labels_t2: np.ndarray

    @property
    def changed(self) -> np.ndarray:
        return self.labels_t1 != self.labels_t2


def make_scene(height: int, width: int, num_classes: int, *, seed: int = 0, changes: int = 6) -> Scene:
    """Blobby land cover for T1, and T2 with ``changes`` rectangles turned into other classes."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((num_classes, max(2, height // 32 + 2), max(2, width // 32 + 2)))
    fields = np.stack([_upsample(c, height, width) for c in coarse])
    labels_t1 = (fields.argmax(axis=0) + 1).astype(np.uint8)
    labels_t2 = labels_t1.copy()
    for _ in range(changes):
        h = int(rng.integers(max(2, height // 10), max(3, height // 4)))
        w = int(rng.integers(max(2, width // 10), max(3, width // 4)))
        r, c = int(rng.integers(0, max(1, height - h))), int(rng.integers(0, max(1, width - w)))
        region = labels_t2[r:r + h, c:c + w]
        new = int(rng.integers(1, num_classes + 1))
        if num_classes > 1:
            region[region == new] = new % num_classes + 1
            region[region != new] = new
        labels_t2[r:r + h, c:c + w] = region
    return Scene(labels_t1, labels_t2)


def render(labels: np.ndarray, palette: Sequence[RGB], *, seed: int = 0, noise: float = 12.0) -> np.ndarray:
    """An 8-bit RGB image ``[3, H, W]`` of ``labels`` (1..N) with texture and noise."""
    rng = np.random.default_rng(seed)
    colors = np.asarray([(0, 0, 0), *palette], dtype=np.float32)
    image = colors[labels].transpose(2, 0, 1)
    image = image + rng.normal(0.0, noise, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _upsample(array: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = np.linspace(0, array.shape[0] - 1, height)
    cols = np.linspace(0, array.shape[1] - 1, width)
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    r1, c1 = np.minimum(r0 + 1, array.shape[0] - 1), np.minimum(c0 + 1, array.shape[1] - 1)
    fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
    top = array[r0][:, c0] * (1 - fc) + array[r0][:, c1] * fc
    bottom = array[r1][:, c0] * (1 - fc) + array[r1][:, c1] * fc
    return top * (1 - fr) + bottom * fr


def write_geotiff(
    path: str | os.PathLike[str],
    array: np.ndarray,
    *,
    crs: str | CRS = "EPSG:32633",
    transform: Affine | None = None,
    nodata: float | None = None,
    dtype: str | None = None,
) -> Path:
    """Write ``array`` (``[bands, H, W]``) as a GeoTIFF; default: 1 m pixels in UTM 33N."""
    path = Path(path)
    transform = transform or Affine(1.0, 0.0, 500000.0, 0.0, -1.0, 5000000.0)
    dtype = dtype or array.dtype.name
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[2], height=array.shape[1],
                       count=array.shape[0], dtype=dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(array.astype(dtype))
    return path


def reproject_geotiff(source: str | os.PathLike[str], target: str | os.PathLike[str], crs: str,
                      *, resolution: float | None = None, nodata: float = 0) -> Path:
    """Warp a GeoTIFF into another CRS (and resolution), as a second date delivered differently would be."""
    target = Path(target)
    with rasterio.open(source) as src:
        transform, width, height = calculate_default_transform(
            src.crs, crs, src.width, src.height, *src.bounds,
            resolution=resolution)
        profile = src.profile | {"crs": crs, "transform": transform, "width": width, "height": height,
                                 "nodata": nodata}
        with rasterio.open(target, "w", **profile) as dst:
            for band in range(1, src.count + 1):
                reproject(rasterio.band(src, band), rasterio.band(dst, band), src_nodata=src.nodata,
                          dst_nodata=nodata, resampling=Resampling.bilinear)
    return target


def write_pair(
    folder: str | os.PathLike[str],
    palette: Sequence[RGB],
    *,
    height: int = 256,
    width: int = 256,
    seed: int = 0,
    crs: str = "EPSG:32633",
    transform: Affine | None = None,
) -> tuple[Path, Path, Scene]:
    """A ready-to-run 8-bit RGB pair on the same grid, and the scene it shows."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scene = make_scene(height, width, len(palette), seed=seed)
    t1 = write_geotiff(folder / "t1.tif", render(scene.labels_t1, palette, seed=seed), crs=crs, transform=transform)
    t2 = write_geotiff(folder / "t2.tif", render(scene.labels_t2, palette, seed=seed + 1), crs=crs,
                       transform=transform)
    return t1, t2, scene


# --- Realistic landscapes ------------------------------------------------------------------------

#: Roles a landscape is built from; every class of a class list plays one of them.
ROLES = ("water", "ground", "low vegetation", "tree", "building", "playground")
_WATER, _GROUND, _LOW_VEG, _TREE, _BUILDING, _PLAYGROUND = range(len(ROLES))

#: Role of a class by its (lower-case) name; classes not listed are matched to roles in order.
_ROLE_OF_NAME = {"water": _WATER, "ground": _GROUND, "desert": _GROUND, "low vegetation": _LOW_VEG,
                 "farmland": _LOW_VEG, "tree": _TREE, "building": _BUILDING, "playground": _PLAYGROUND}
#: Where a role goes when no class plays it (Landsat-SCD has no trees and no playgrounds).
_FALLBACK = {_TREE: _LOW_VEG, _PLAYGROUND: _GROUND, _LOW_VEG: _GROUND, _BUILDING: _GROUND, _WATER: _GROUND,
             _GROUND: _LOW_VEG}


@dataclass(frozen=True)
class Look:
    """How a class is rendered: base colour (not its palette colour), texture strength, season colour."""

    color: tuple[float, float, float]
    texture: float
    autumn: tuple[float, float, float] | None = None
    stripes: float = 0.0


#: Appearance per class name; the colours are deliberately close where real classes are hard to tell apart.
LOOKS = {
    "water": Look((42, 66, 80), 5, (56, 80, 78)),
    "ground": Look((146, 136, 118), 16),
    "desert": Look((192, 168, 130), 12),
    "low vegetation": Look((110, 130, 76), 14, (150, 138, 90)),
    "farmland": Look((96, 124, 64), 10, (158, 142, 96), stripes=14),
    "tree": Look((64, 92, 54), 24, (112, 100, 60)),
    "building": Look((150, 140, 132), 6),
    "playground": Look((152, 104, 88), 8, stripes=10),
}
_ROOFS = np.array([(178, 170, 160), (150, 84, 70), (108, 110, 118), (196, 192, 184), (132, 122, 100),
                   (160, 150, 140)], dtype=np.float32)
_BLOCK = 24  # building block size in pixels


@dataclass(frozen=True)
class Landscape:
    """Land cover of both dates (classes 1..N) and building identities (0 = none) per date."""

    classes_t1: np.ndarray
    classes_t2: np.ndarray
    buildings_t1: np.ndarray
    buildings_t2: np.ndarray
    texture: np.ndarray  # [2, H, W] fine and patchy texture fields shared by both dates
    roof_colours: np.ndarray  # [max building id + 1, 3]

    @property
    def changed(self) -> np.ndarray:
        return self.classes_t1 != self.classes_t2


def _fbm(height: int, width: int, rng: np.random.Generator, cell: float, octaves: int = 3) -> np.ndarray:
    """Smooth noise with features of about ``cell`` pixels (value noise, ``octaves`` halvings), in 0..1."""
    total = np.zeros((height, width), np.float32)
    weight = 0.0
    for octave in range(octaves):
        size = max(cell / 2**octave, 1.0)
        coarse = rng.random((int(height / size) + 2, int(width / size) + 2)).astype(np.float32)
        amplitude = 0.5**octave
        total += amplitude * _upsample_separable(coarse, height, width)
        weight += amplitude
    total /= weight
    low, high = np.quantile(total[::4, ::4], [0.001, 0.999])
    return np.clip((total - low) / max(high - low, 1e-6), 0, 1)


def _upsample_separable(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling like :func:`_upsample`, one axis at a time in float32 (several times faster)."""
    array = array.astype(np.float32, copy=False)
    cols = np.linspace(0, array.shape[1] - 1, width, dtype=np.float32)
    c0 = np.floor(cols).astype(int)
    c1 = np.minimum(c0 + 1, array.shape[1] - 1)
    fc = cols - c0
    across = array[:, c0] * (1 - fc) + array[:, c1] * fc
    rows = np.linspace(0, array.shape[0] - 1, height, dtype=np.float32)
    r0 = np.floor(rows).astype(int)
    r1 = np.minimum(r0 + 1, array.shape[0] - 1)
    fr = (rows - r0)[:, None]
    return across[r0] * (1 - fr) + across[r1] * fr


def _class_of_roles(classes: Sequence[LandCoverClass]) -> np.ndarray:
    """Class index (1..N) each role is drawn as."""
    names = [c.name.lower() for c in classes]
    table = np.zeros(len(ROLES), np.uint8)
    played = {}
    for index, name in enumerate(names, start=1):
        role = _ROLE_OF_NAME.get(name)
        if role is None:  # unknown names take the first role no class has taken
            role = next((r for r in range(len(ROLES)) if r not in played), index % len(ROLES))
        played.setdefault(role, index)
    for role in range(len(ROLES)):
        seen = role
        while seen not in played:
            seen = _FALLBACK[seen]
        table[role] = played[seen]
    return table


def _blocks(height: int, width: int, rng: np.random.Generator, present: np.ndarray,
            margin: tuple[int, int] = (3, 10)) -> tuple[np.ndarray, np.ndarray]:
    """A building rectangle inside each present ``_BLOCK``-sized block: ``(inside mask, block id)``.

    Fully vectorised: every pixel looks up the rectangle of its own block.
    """
    rows_b, cols_b = present.shape
    shape = (rows_b, cols_b)
    top = rng.integers(1, margin[1], shape)
    left = rng.integers(1, margin[1], shape)
    bottom = _BLOCK - rng.integers(margin[0], margin[1], shape)
    right = _BLOCK - rng.integers(margin[0], margin[1], shape)
    rows, cols = np.arange(height), np.arange(width)
    br, bc = (rows // _BLOCK)[:, None], (cols // _BLOCK)[None, :]
    lr, lc = (rows % _BLOCK)[:, None], (cols % _BLOCK)[None, :]
    inside = (present[br, bc] & (lr >= top[br, bc]) & (lr < bottom[br, bc])
              & (lc >= left[br, bc]) & (lc < right[br, bc]))
    return inside, (br * cols_b + bc + 1).astype(np.int32)


def make_landscape_pair(height: int, width: int, classes: Sequence[LandCoverClass], *, seed: int = 0,
                        change: float | None = None) -> Landscape:
    """Land cover of two dates with realistic transitions (see the module docstring).

    Args:
        height, width: Size in pixels (any; blocks and features keep their pixel size).
        classes: Land-cover classes 1..N; each is drawn in the role its name says (water, ground or desert,
            low vegetation or farmland, tree, building, playground).
        seed: Everything follows from it.
        change: Intensity of change 0..1 (default: drawn per pair, 0.2..1).
    """
    rng = np.random.default_rng(seed)
    change = float(rng.uniform(0.2, 1.0)) if change is None else float(change)
    elevation = _fbm(height, width, rng, 120)
    urban_field = _fbm(height, width, rng, 160)
    moisture = _fbm(height, width, rng, 56)
    water_level = float(rng.uniform(0.0, 0.22))
    urban_level = float(rng.uniform(0.42, 0.8))

    roles = np.full((height, width), _GROUND, np.uint8)
    roles[moisture > 0.35] = _LOW_VEG
    roles[moisture > 0.68] = _TREE
    urban = urban_field > urban_level
    roles[urban] = _GROUND  # streets and yards
    blocks_shape = (height // _BLOCK + 1, width // _BLOCK + 1)
    block_urban = urban_field[::_BLOCK, ::_BLOCK][: blocks_shape[0], : blocks_shape[1]]
    block_urban = np.pad(block_urban, ((0, blocks_shape[0] - block_urban.shape[0]),
                                       (0, blocks_shape[1] - block_urban.shape[1])), mode="edge")
    built = (block_urban > urban_level) & (rng.random(blocks_shape) < 0.75)
    inside, block_id = _blocks(height, width, rng, built)
    playground_blocks = (block_urban > urban_level - 0.05) & ~built & (rng.random(blocks_shape) < 0.04)
    pitch, _ = _blocks(height, width, rng, playground_blocks, margin=(1, 3))
    roles[pitch] = _PLAYGROUND
    roles[inside] = _BUILDING
    water = elevation < water_level
    roles[water] = _WATER
    buildings_t1 = np.where(roles == _BUILDING, block_id, 0).astype(np.int32)

    roles2 = roles.copy()
    # construction: new buildings on bare ground and fields near the town (ground/low vegetation -> building)
    near_town = block_urban > urban_level - 0.25
    new_blocks = near_town & ~built & (rng.random(blocks_shape) < 0.5 * change)
    new_inside, _ = _blocks(height, width, rng, new_blocks)
    build_on = new_inside & np.isin(roles, (_GROUND, _LOW_VEG)) & ~water
    # demolition: buildings removed, bare ground left (building -> ground)
    demolished_blocks = built & (rng.random(blocks_shape) < 0.08 * change)
    demolished = inside & demolished_blocks[(np.arange(height) // _BLOCK)[:, None],
                                            (np.arange(width) // _BLOCK)[None, :]]
    roles2[demolished] = _GROUND
    # clearing of vegetation (low vegetation / tree -> ground) and planting (ground -> low vegetation)
    blobs = _fbm(height, width, rng, 40, octaves=2)
    clearing = (blobs > 1 - 0.35 * change) & np.isin(roles, (_LOW_VEG, _TREE))
    roles2[clearing] = _GROUND
    planting = (blobs < 0.3 * change) & (roles == _GROUND) & ~urban
    roles2[planting] = _LOW_VEG
    growth = (_fbm(height, width, rng, 32, octaves=2) > 1 - 0.25 * change) & (roles == _LOW_VEG)
    roles2[growth] = _TREE
    roles2[build_on] = _BUILDING
    # water level: shores flood (-> water) or fall dry (water -> ground / low vegetation)
    level2 = water_level + float(rng.uniform(-0.08, 0.08)) * change
    water2 = elevation < level2
    dried = water & ~water2
    roles2[dried] = np.where(moisture[dried] > 0.5, _LOW_VEG, _GROUND)
    flooded = water2 & ~water & (roles2 != _BUILDING) & (roles != _BUILDING)
    roles2[flooded] = _WATER
    buildings_t2 = np.where(roles2 == _BUILDING, np.where(build_on, block_id + block_id.max() + 1, block_id),
                            0).astype(np.int32)

    table = _class_of_roles(classes)
    texture = np.stack([_fbm(height, width, rng, 5, octaves=2), _fbm(height, width, rng, 28, octaves=2)])
    roofs = _ROOFS[rng.integers(0, len(_ROOFS), int(buildings_t2.max()) + 1)]
    roofs = roofs + rng.normal(0, 6, roofs.shape).astype(np.float32)
    return Landscape(table[roles], table[roles2], buildings_t1, buildings_t2, texture, roofs)


def render_landscape(landscape: Landscape, classes: Sequence[LandCoverClass], *, seed: int = 0,
                     misregistration: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Both dates as 8-bit RGB ``[3, H, W]`` (values 1..255, so 0 can serve as nodata).

    T1 is summer, T2 a later season under other illumination, shifted by up to
    ``misregistration`` pixels in each direction.
    """
    rng = np.random.default_rng(seed)
    images = []
    for date, (labels, buildings) in enumerate(((landscape.classes_t1, landscape.buildings_t1),
                                                 (landscape.classes_t2, landscape.buildings_t2))):
        season = float(rng.uniform(0.0, 0.15)) if date == 0 else float(rng.uniform(0.25, 0.7))
        image = _render_date(labels, buildings, landscape.texture, landscape.roof_colours, classes, rng,
                             season)
        if date == 1 and misregistration > 0:
            image = _shift(image, *rng.uniform(-misregistration, misregistration, 2))
        images.append(np.clip(image, 1, 255).astype(np.uint8))
    return images[0], images[1]


def _render_date(labels: np.ndarray, buildings: np.ndarray, texture: np.ndarray, roof_colours: np.ndarray,
                 classes: Sequence[LandCoverClass], rng: np.random.Generator, season: float) -> np.ndarray:
    height, width = labels.shape
    looks = [LOOKS.get(c.name.lower(), Look(tuple(float(v) * 0.6 + 50 for v in c.color), 12)) for c in classes]
    base = np.zeros((len(looks) + 1, 3), np.float32)
    amplitude = np.zeros(len(looks) + 1, np.float32)
    stripes = np.zeros(len(looks) + 1, np.float32)
    for index, look in enumerate(looks, start=1):
        colour = np.asarray(look.color, np.float32)
        if look.autumn is not None:
            colour = colour * (1 - season) + np.asarray(look.autumn, np.float32) * season
        base[index] = colour + rng.normal(0, 4, 3)
        amplitude[index], stripes[index] = look.texture, look.stripes
    image = base[labels].transpose(2, 0, 1).copy()
    fine, patchy = texture[0] - 0.5, texture[1] - 0.5
    date_grain = rng.normal(0, 1, (height, width)).astype(np.float32)
    grain = amplitude[labels] * (1.6 * fine + 1.0 * patchy + 0.25 * date_grain)
    image += grain[None]
    if stripes.any():
        rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
        parcel_angle = _upsample_separable(rng.uniform(0, np.pi, (height // 48 + 2, width // 48 + 2)), height, width)
        angle = np.round(parcel_angle / (np.pi / 4)) * (np.pi / 4)
        pattern = np.sin(2 * np.pi * (rows * np.cos(angle) + cols * np.sin(angle)) / 7.0)
        image += (stripes[labels] * pattern)[None].astype(np.float32)
    roofs = buildings > 0
    if roofs.any():
        # a building keeps its roof colour between dates: its identity indexes the landscape's roof colours
        lut = roof_colours + rng.normal(0, 3, 3).astype(np.float32)
        image[:, roofs] = lut[buildings[roofs]].T + grain[roofs] * 0.5
        shadow = np.zeros_like(roofs)
        shadow[3:, 3:] = roofs[:-3, :-3]
        shadow &= ~roofs
        image[:, shadow] *= 0.62
    # illumination: gain, colour cast, gradient across the scene, haze
    gain = float(rng.uniform(0.78, 1.22))
    cast = rng.uniform(0.93, 1.07, 3).astype(np.float32)
    ramp_r, ramp_c = rng.uniform(-0.15, 0.15, 2)
    gradient = (1 + ramp_r * (np.linspace(-0.5, 0.5, height)[:, None])
                + ramp_c * (np.linspace(-0.5, 0.5, width)[None, :])).astype(np.float32)
    haze = float(rng.uniform(0, 22))
    image = image * (gain * cast)[:, None, None] * gradient[None] + haze
    image = _box_blur(image)
    image += rng.normal(0, float(rng.uniform(2.5, 5.5)), image.shape).astype(np.float32)
    return image


def _box_blur(image: np.ndarray) -> np.ndarray:
    """3 x 3 mean of each band (the optics' blur), edges replicated."""
    padded = np.pad(image, ((0, 0), (1, 1), (1, 1)), mode="edge")
    out = np.zeros_like(image)
    height, width = image.shape[1:]
    for dr in range(3):
        for dc in range(3):
            out += padded[:, dr:dr + height, dc:dc + width]
    return out / 9.0


def _shift(image: np.ndarray, d_row: float, d_col: float) -> np.ndarray:
    """``image`` moved by a sub-pixel offset (bilinear, one axis at a time), edges replicated: a misregistration."""
    height, width = image.shape[1:]
    cols = np.clip(np.arange(width, dtype=np.float32) - d_col, 0, width - 1)
    c0 = np.floor(cols).astype(int)
    c1 = np.minimum(c0 + 1, width - 1)
    fc = cols - c0
    across = image[:, :, c0] * (1 - fc) + image[:, :, c1] * fc
    rows = np.clip(np.arange(height, dtype=np.float32) - d_row, 0, height - 1)
    r0 = np.floor(rows).astype(int)
    r1 = np.minimum(r0 + 1, height - 1)
    fr = (rows - r0)[:, None]
    return across[:, r0] * (1 - fr) + across[:, r1] * fr


# --- Datasets and scenes on disk -----------------------------------------------------------------

#: Folders of each dataset layout written by :func:`write_dataset`: (T1, T2, labels...).
LAYOUT_FOLDERS = {"second": ("im1", "im2", "label1", "label2"), "landsat-scd": ("A", "B", "labelA", "labelB"),
                  "binary": ("A", "B", "label")}

_NOTICE = """SYNTHETIC DATA - procedurally generated, no real place or sensor.
Written by `python -m training_cli synthetic` ({what}). Seed {seed}.
Land cover is built like a real landscape and changed by realistic transitions; the images are rendered with
textures (not the label colours), a season and illumination shift between the dates, noise, blur and a slight
misregistration of T2. Useful for tests, demos and benchmarks; scores on it say nothing about real imagery.
"""


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path)


def split_counts(pairs: int, shares: Sequence[float] = (0.7, 0.15, 0.15)) -> tuple[int, int, int]:
    """Pairs per train/val/test split: in proportion, at least one in each when there are three or more."""
    val = max(1 if pairs >= 3 else 0, round(pairs * shares[1]))
    test = max(1 if pairs >= 3 else 0, round(pairs * shares[2]))
    return pairs - val - test, val, test


def write_dataset(out: str | os.PathLike[str], classes: Sequence[LandCoverClass], *, format: str = "second",
                  pairs: int = 16, size: int = 256, seed: int = 0,
                  shares: Sequence[float] = (0.7, 0.15, 0.15)) -> dict[str, int]:
    """Write ``pairs`` synthetic pairs as a dataset in ``format``'s layout under ``out/{train,val,test}/``.

    ``second`` and ``landsat-scd`` labels are RGB colour maps (white = no change, else the class colour of
    that date inside change); ``binary`` labels are 0/255. Returns the number of pairs per split.
    """
    if format not in LAYOUT_FOLDERS:
        raise ValueError(f"unknown dataset format {format!r}; choose one of {', '.join(LAYOUT_FOLDERS)}")
    out = Path(out)
    folders = LAYOUT_FOLDERS[format]
    palette = np.asarray([(255, 255, 255), *(c.color for c in classes)], np.uint8)
    counts = dict(zip(("train", "val", "test"), split_counts(pairs, shares), strict=True))
    index = 0
    for split, count in counts.items():
        for _ in range(count):
            pair_seed = seed * 100_003 + index
            landscape = make_landscape_pair(size, size, classes, seed=pair_seed)
            image1, image2 = render_landscape(landscape, classes, seed=pair_seed + 1)
            name = f"{index:05d}.png"
            base = out / split
            _save_png(base / folders[0] / name, image1.transpose(1, 2, 0))
            _save_png(base / folders[1] / name, image2.transpose(1, 2, 0))
            changed = landscape.changed
            if format == "binary":
                _save_png(base / folders[2] / name, changed.astype(np.uint8) * 255)
            else:
                for folder, labels in zip(folders[2:], (landscape.classes_t1, landscape.classes_t2), strict=True):
                    _save_png(base / folder / name, palette[np.where(changed, labels, 0)])
            index += 1
    (out / "README.txt").write_text(_NOTICE.format(what=f"{format} layout, {pairs} pairs of {size} px",
                                                   seed=seed), encoding="utf-8")
    return counts


@dataclass(frozen=True)
class ScenePaths:
    """Files of :func:`write_scene`: both dates and the ground truth on T1's grid."""

    t1: Path
    t2: Path
    truth_t1: Path
    truth_t2: Path
    truth_change: Path
    truth_fromto: Path


def write_scene(folder: str | os.PathLike[str], classes: Sequence[LandCoverClass], *, size: int = 2048,
                seed: int = 0, crs: str = "EPSG:32633", resolution: float = 1.0, t2_crs: str | None = "EPSG:4326",
                t2_resolution: float | None = None, nodata_border: float = 0.06) -> ScenePaths:
    """One large georeferenced scene pair with its ground truth.

    T1 is ``size x size`` pixels of ``resolution`` m in ``crs``; T2 shows the same ground (slightly
    misregistered) with a nodata (0) strip of ``nodata_border`` of its width on the east side, delivered in
    ``t2_crs`` at ``t2_resolution`` (``None``: on T1's grid). Ground truth lies on T1's grid: full land cover
    of each date (1..N), the change mask (0/1) and the from-to code of the engine (0 = no change,
    ``1 + (c1 - 1) * N + (c2 - 1)``).
    """
    from .encode import fromto_codes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    landscape = make_landscape_pair(size, size, classes, seed=seed)
    image1, image2 = render_landscape(landscape, classes, seed=seed + 1)
    border = round(size * nodata_border)
    if border:
        image2[:, :, size - border:] = 0
    transform = Affine(resolution, 0.0, 500000.0, 0.0, -resolution, 5000000.0)
    t1 = write_geotiff(folder / "t1.tif", image1, crs=crs, transform=transform, nodata=0)
    if t2_crs is None or (t2_crs == crs and t2_resolution is None):
        t2 = write_geotiff(folder / "t2.tif", image2, crs=crs, transform=transform, nodata=0)
    else:
        same_grid = write_geotiff(folder / "t2_on_t1_grid.tif", image2, crs=crs, transform=transform, nodata=0)
        t2 = reproject_geotiff(same_grid, folder / "t2.tif", t2_crs, resolution=t2_resolution, nodata=0)
        same_grid.unlink()
    changed = landscape.changed
    fromto = fromto_codes(landscape.classes_t1, landscape.classes_t2, changed, len(classes))
    paths = ScenePaths(
        t1, t2,
        write_geotiff(folder / "truth_t1.tif", landscape.classes_t1[None], crs=crs, transform=transform),
        write_geotiff(folder / "truth_t2.tif", landscape.classes_t2[None], crs=crs, transform=transform),
        write_geotiff(folder / "truth_change.tif", changed.astype(np.uint8)[None], crs=crs, transform=transform),
        write_geotiff(folder / "truth_fromto.tif", fromto[None], crs=crs, transform=transform),
    )
    (folder / "README.txt").write_text(_NOTICE.format(
        what=f"scene pair of {size} x {size} px; T2 in {t2_crs or crs}; truth_*.tif on T1's grid", seed=seed),
        encoding="utf-8")
    return paths


# --- Multispectral scenes: classes alike in RGB, apart in the near infrared ------------------------

#: SECOND's class codes a multispectral scene uses: water, bare ground, low vegetation (grass) and
#: playground (artificial turf, which is coloured like grass but reflects little near-infrared light).
MULTISPECTRAL_CODES = (1, 2, 3, 6)
_GRASS, _TURF = 3, 6

#: Surface reflectance (0..1) of each code in red, green, blue and near infrared: grass and turf share
#: their colour and differ only in the near infrared, as living and plastic vegetation do.
_REFLECTANCE = {1: (0.02, 0.04, 0.06, 0.01), 2: (0.20, 0.17, 0.13, 0.25), _GRASS: (0.05, 0.10, 0.04, 0.40),
                _TURF: (0.05, 0.10, 0.04, 0.08)}


def multispectral_signatures(bands: int, *, seed: int = 0) -> np.ndarray:
    """Reflectance ``[7, bands]`` of SECOND's codes 0..6 in bands red, green, blue, near infrared, then more.

    Bands after the fourth (red edge, short-wave infrared ...) are drawn per code from ``seed``, equal for
    grass and turf, so the near infrared (band 4) is the only band that tells them apart. Codes the scenes
    do not use get zeros.
    """
    if bands < 1:
        raise ValueError(f"a scene needs at least one band, got {bands}")
    rng = np.random.default_rng(seed)
    table = np.zeros((7, max(bands, 4)), np.float64)
    for code, values in _REFLECTANCE.items():
        table[code, :4] = values
    for band in range(4, bands):
        table[list(_REFLECTANCE), band] = rng.uniform(0.03, 0.35, len(_REFLECTANCE))
        table[_TURF, band] = table[_GRASS, band]
    return table[:, :bands]


def make_multispectral_scene(size: int, *, seed: int = 0, changes: int = 8) -> Scene:
    """Blobby water, ground, grass and turf at T1; at T2 ``changes`` rectangles where grass became turf and
    turf grass (pitches laid or dug up): every change is invisible in red, green and blue."""
    rng = np.random.default_rng(seed)
    blobs = make_scene(size, size, len(MULTISPECTRAL_CODES), seed=seed, changes=0).labels_t1
    labels_t1 = np.asarray(MULTISPECTRAL_CODES, np.uint8)[blobs - 1]
    labels_t2 = labels_t1.copy()
    for _ in range(changes):
        h, w = (int(rng.integers(max(2, size // 8), max(3, size // 3))) for _ in range(2))
        r, c = int(rng.integers(0, size - h)), int(rng.integers(0, size - w))
        region = labels_t1[r:r + h, c:c + w]
        swapped = np.where(region == _GRASS, _TURF, np.where(region == _TURF, _GRASS, region))
        labels_t2[r:r + h, c:c + w] = swapped
    return Scene(labels_t1, labels_t2)


def render_multispectral(labels: np.ndarray, signatures: np.ndarray, *, seed: int = 0,
                         noise: float = 0.01) -> np.ndarray:
    """uint16 reflectance x 10000 ``[bands, H, W]`` (Sentinel-2 L2A's convention) of ``labels``.

    A smooth illumination field scales every band alike and each pixel gets sensor noise, so a class is a
    band ratio more than a fixed value.
    """
    rng = np.random.default_rng(seed)
    height, width = labels.shape
    light = 1.0 + 0.15 * (_upsample(rng.random((4, 4)), height, width) - 0.5)
    image = signatures[labels].transpose(2, 0, 1) * light[None]
    image = image + rng.normal(0.0, noise, image.shape)
    return np.clip(np.rint(image * 10000), 1, 10000).astype(np.uint16)


def write_multispectral_scene(folder: str | os.PathLike[str], *, size: int = 256, bands: int = 4, seed: int = 0,
                              changes: int = 8, crs: str = "EPSG:32633", resolution: float = 10.0) -> ScenePaths:
    """Two dates of ``bands``-band uint16 reflectance on one grid (:func:`make_multispectral_scene`) and their
    ground truth, as :func:`write_scene` writes it (SECOND's codes, so ``prepare --classes second`` reads it)."""
    from .encode import fromto_codes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scene = make_multispectral_scene(size, seed=seed, changes=changes)
    signatures = multispectral_signatures(bands, seed=seed)
    transform = Affine(resolution, 0.0, 500000.0, 0.0, -resolution, 5000000.0)
    t1, t2 = (write_geotiff(folder / f"t{n}.tif", render_multispectral(labels, signatures, seed=seed + n), crs=crs,
                            transform=transform, nodata=0)
              for n, labels in ((1, scene.labels_t1), (2, scene.labels_t2)))
    names = ("Red", "Green", "Blue", "NIR", *(f"Extra {n}" for n in range(5, bands + 1)))[:bands]
    for path in (t1, t2):  # described as a multispectral product describes its bands
        with rasterio.open(path, "r+") as dst:
            for band, name in enumerate(names, start=1):
                dst.set_band_description(band, name)
    changed = scene.changed
    fromto = fromto_codes(scene.labels_t1, scene.labels_t2, changed, 6)
    paths = ScenePaths(
        t1, t2,
        write_geotiff(folder / "truth_t1.tif", scene.labels_t1[None], crs=crs, transform=transform),
        write_geotiff(folder / "truth_t2.tif", scene.labels_t2[None], crs=crs, transform=transform),
        write_geotiff(folder / "truth_change.tif", changed.astype(np.uint8)[None], crs=crs, transform=transform),
        write_geotiff(folder / "truth_fromto.tif", fromto[None], crs=crs, transform=transform),
    )
    (folder / "README.txt").write_text(_NOTICE.format(
        what=f"multispectral scene pair of {size} x {size} px, {bands} bands of uint16 reflectance x 10000", seed=seed),
        encoding="utf-8")
    return paths
