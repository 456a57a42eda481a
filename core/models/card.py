"""The model card: everything a checkpoint says about how to use its weights.

A card is plain data (JSON-serialisable), so it can be read without building a
network, shown by the plugin's "Model information" algorithm and checked before a
long run. Presets give the cards of the datasets the papers trained on.
"""

from __future__ import annotations

import dataclasses
import math
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # base imports torch; cards are read without it (e.g. to compare land-cover maps)
    from .base import Task

#: Bumped whenever the checkpoint layout changes incompatibly.
FORMAT_VERSION = 1

RGB = tuple[int, int, int]

#: Bands per date a network takes unless its ``in_channels`` option says otherwise (red, green, blue).
RGB_BANDS = 3


@dataclass(frozen=True)
class LandCoverClass:
    name: str
    color: RGB


def control_characters(text: str) -> list[str]:
    """The characters of ``text`` that no class name may hold.

    Control characters (C0, DEL and C1: a terminal's ANSI escape sequences start with
    ESC, a CSV row ends at a line break) and lone surrogates (not text at all) would
    reach every legend, the report, the CSV matrix and the log as they are.
    """
    return [c for c in text if unicodedata.category(c) in ("Cc", "Cs")]


def check_class_name(name: object, where: str) -> str:
    """``name`` if it can name a class: the one rule for model cards, class tables and map legends.

    Raises:
        ValueError: for a name that is not text, is blank, or holds a control character
            (:func:`control_characters`); the message starts with ``where``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where} has no name")
    control = control_characters(name)
    if control:
        raise ValueError(f"{where} name {name!r} holds a control character ({control[0]!r})")
    return name


#: Input scaling methods (:class:`InputScaling`): the two that stretch non-8-bit input to 0..255, and the one
#: that takes every band in its own units.
SCALING_METHODS = ("percentile", "range", "statistics")


@dataclass(frozen=True)
class InputScaling:
    """How input pixels are brought to the units the card's per-band statistics are in.

    ``method``:

    * ``"percentile"`` (the default) and ``"range"``: the statistics are in 0..255 units. 8-bit
      input is taken as is; other types are stretched to 0..255, per band between the scene's
      ``low``..``high`` percentiles, or linearly from ``minimum``..``maximum``.
    * ``"statistics"``: the statistics are in the imagery's own units, computed on the training
      split (uint16 reflectance such as Sentinel-2 L2A's 0..10000, Landsat Collection 2's scaled
      integers, float reflectance). Every data type, 8-bit included, is taken in those units (the
      file's own scale and offset applied where it declares them, as GDAL defines them) and
      normalised by the statistics alone: nothing is stretched or divided by 255.
    """

    method: str = "percentile"
    minimum: float = 0.0
    maximum: float = 255.0
    low: float = 2.0
    high: float = 98.0

    def __post_init__(self) -> None:
        if self.method not in SCALING_METHODS:
            raise ValueError(f"input scaling method must be one of {', '.join(map(repr, SCALING_METHODS))}, "
                             f"got {self.method!r}")
        if self.method == "range" and not self.maximum > self.minimum:
            raise ValueError(f"scaling range is empty: {self.minimum}..{self.maximum}")
        if self.method == "percentile" and not 0 <= self.low < self.high <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.low}, {self.high}")

    @property
    def units(self) -> str:
        """The units the card's per-band statistics are in, in words."""
        if self.method == "statistics":
            return "the imagery's own units"
        return "0-255 units"

    def describe(self) -> str:
        """One line for an analyst: how input of each data type is scaled."""
        if self.method == "statistics":
            return ("every data type in its own units (the file's scale and offset applied where it declares them), "
                    "normalised by the statistics")
        if self.method == "percentile":
            return f"8-bit as is; other types: percentile {self.low:g}-{self.high:g} % stretch to 0-255"
        return f"8-bit as is; other types: range {self.minimum:g}-{self.maximum:g} stretched to 0-255"


@dataclass(frozen=True)
class TrainingResize:
    """The training pairs were resampled before the network saw them: ``source_height x source_width`` px
    tiles to ``size x size`` (Landsat-SCD's 416 px tiles to 512 px, as LSAFNet trains on them).

    Objects in what the network learned from were :attr:`factor` times larger, in pixels, than in the
    source imagery, and the tile size is in resized pixels. A scene at the source's resolution looks
    like the training imagery after resampling it by the same factor (its pixel size divided by it).
    """

    source_height: int
    source_width: int
    size: int

    def __post_init__(self) -> None:
        for name in ("source_height", "source_width", "size"):
            value = getattr(self, name)
            if not _is_whole(value) or value < 1:
                raise ValueError(f"training resize {name} must be a positive whole number of pixels, got {value!r}")

    @property
    def factor(self) -> tuple[float, float]:
        """How many times larger (rows, columns) the training imagery was than its source."""
        return self.size / self.source_height, self.size / self.source_width

    def describe(self) -> str:
        """One line for an analyst, e.g. "416 x 416 px tiles resized to 512 x 512 px (x1.231)"."""
        rows, cols = self.factor
        scale = f"x{rows:.4g}" if rows == cols else f"x{rows:.4g} rows, x{cols:.4g} columns"
        return (f"{self.source_width} x {self.source_height} px tiles resized to {self.size} x {self.size} px "
                f"({scale})")


@dataclass(frozen=True)
class ModelCard:
    """Metadata stored in every checkpoint.

    Attributes:
        model: Registry name of the network.
        options: Constructor options that rebuild exactly these weights.
        task: ``"semantic"`` or ``"binary"``.
        classes: Land-cover classes 1..N for semantic models ("no change" is
            implicit as class 0); empty for binary models.
        change_color: Colour of "change" in binary masks.
        tile_size: Inference tile size (the training crop).
        bands_t1, bands_t2: Default 1-based input bands per date, in model order.
        scaling: How input is brought to the units of the statistics (0..255, or the imagery's own).
        mean_t1, std_t1, mean_t2, std_t2: Per-date, per-band normalisation, in the units ``scaling`` names.
        dataset: What the weights were trained on ("untrained" for ``init``).
        training_resize: How the training pairs were resized before cropping (Landsat-SCD's 416 px
            tiles to 512), or ``None`` when they were used at their own resolution. Cards written
            before this field existed read as ``None``.
        metrics: Validation metrics by name.
        training: How the weights were trained (recipe, data, backbone start, best epoch), as
            written by the training CLI; empty for untrained files.
        created: ISO date-time of writing.
        software_version: Version of this software that wrote the file.
        format_version: Checkpoint layout version.
    """

    model: str
    options: dict[str, Any]
    task: Task
    classes: tuple[LandCoverClass, ...]
    tile_size: int
    bands_t1: tuple[int, ...]
    bands_t2: tuple[int, ...]
    mean_t1: tuple[float, ...]
    std_t1: tuple[float, ...]
    mean_t2: tuple[float, ...]
    std_t2: tuple[float, ...]
    scaling: InputScaling = field(default_factory=InputScaling)
    change_color: RGB = (255, 0, 0)
    dataset: str = "untrained"
    training_resize: TrainingResize | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    software_version: str = ""
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        _check_card_numbers(self)
        bands = len(self.bands_t1)
        if len(self.bands_t2) != bands:
            raise ValueError("both dates must use the same number of bands")
        for label, values in (("mean_t1", self.mean_t1), ("std_t1", self.std_t1),
                              ("mean_t2", self.mean_t2), ("std_t2", self.std_t2)):
            if len(values) != bands:
                raise ValueError(f"{label} has {len(values)} values but the model takes {bands} bands")
        if any(s <= 0 for s in (*self.std_t1, *self.std_t2)):
            raise ValueError("standard deviations must be positive")
        if self.task == "semantic" and not self.classes:
            raise ValueError("a semantic model needs at least one land-cover class")
        if self.tile_size % 32 or self.tile_size < 32:
            raise ValueError(f"tile size must be a positive multiple of 32, got {self.tile_size}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Rebuild a card from :meth:`to_dict` output; unknown keys are an error."""
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model card fields: {', '.join(sorted(unknown))}")
        data["classes"] = tuple(LandCoverClass(c["name"], tuple(c["color"])) for c in data.get("classes", ()))
        data["scaling"] = InputScaling(**data.get("scaling", {}))
        resize = data.get("training_resize")
        if resize is not None:
            if not isinstance(resize, dict):
                raise ValueError(f"training_resize must be a table of source_height, source_width and size, "
                                 f"got {resize!r}")
            try:
                data["training_resize"] = TrainingResize(**resize)
            except TypeError as error:
                raise ValueError(f"training_resize: {error}") from None
        for key in ("bands_t1", "bands_t2", "mean_t1", "std_t1", "mean_t2", "std_t2", "change_color"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_color(label: str, color: Any) -> None:
    if not (isinstance(color, (tuple, list)) and len(color) == 3
            and all(_is_whole(c) and 0 <= c <= 255 for c in color)):
        raise ValueError(f"{label} colour {color!r} is not three whole numbers from 0 to 255")


def _check_card_numbers(card: ModelCard) -> None:
    """Refuse a card whose numbers would silently give a wrong map (NaN statistics, bad colours, ...).

    The checksum of a model file covers its weights only, so a card edited by hand
    (or written by a buggy tool) is caught here, when the file is loaded, before any
    pixel is processed.
    """
    if not _is_whole(card.tile_size):
        raise ValueError(f"tile size must be a whole number of pixels, got {card.tile_size!r}")
    for label, bands in (("bands_t1", card.bands_t1), ("bands_t2", card.bands_t2)):
        if not bands or not all(_is_whole(b) and b >= 1 for b in bands):
            raise ValueError(f"{label} must list band numbers from 1 up, got {list(bands)!r}")
    for label, values in (("mean_t1", card.mean_t1), ("mean_t2", card.mean_t2),
                          ("std_t1", card.std_t1), ("std_t2", card.std_t2)):
        bad = [v for v in values if not _is_number(v)]
        if bad:
            raise ValueError(f"{label} holds {bad[0]!r}, which is not a finite number")
        if label.startswith("std") and any(v <= 0 for v in values):
            raise ValueError(f"{label} must be positive, got {list(values)!r}")
    scaling = card.scaling
    if not all(_is_number(v) for v in (scaling.minimum, scaling.maximum, scaling.low, scaling.high)):
        raise ValueError("the input scaling holds a number that is not finite")
    _check_color("the change", card.change_color)
    if card.training_resize is not None and not isinstance(card.training_resize, TrainingResize):
        raise ValueError(f"training_resize must be a TrainingResize or None, got {card.training_resize!r}")
    for index, land_cover in enumerate(card.classes, start=1):
        name = check_class_name(land_cover.name, f"class {index}")
        _check_color(f"class {index} ({name})", land_cover.color)
    if len(set(card.class_names)) != len(card.classes):
        raise ValueError("two classes have the same name")
    if not _is_whole(card.format_version):
        raise ValueError(f"format version must be a whole number, got {card.format_version!r}")


# --- Presets: dataset classes, palettes, statistics (docs/networks.md) ---------------------

SECOND_CLASSES = (
    LandCoverClass("Water", (0, 0, 255)),
    LandCoverClass("Ground", (128, 128, 128)),
    LandCoverClass("Low vegetation", (0, 128, 0)),
    LandCoverClass("Tree", (0, 255, 0)),
    LandCoverClass("Building", (128, 0, 0)),
    LandCoverClass("Playground", (255, 0, 0)),
)

LANDSAT_SCD_CLASSES = (
    LandCoverClass("Farmland", (0, 155, 0)),
    LandCoverClass("Desert", (255, 165, 0)),
    LandCoverClass("Building", (230, 30, 100)),
    LandCoverClass("Water", (0, 170, 240)),
)

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class Preset:
    """Classes, normalisation and tile size of one dataset, for ``init`` and training."""

    name: str
    task: Task
    classes: tuple[LandCoverClass, ...]
    tile_size: int
    mean_t1: tuple[float, ...]
    std_t1: tuple[float, ...]
    mean_t2: tuple[float, ...]
    std_t2: tuple[float, ...]
    description: str


PRESETS: dict[str, Preset] = {
    "second": Preset(
        "second", "semantic", SECOND_CLASSES, 512,
        (113.40, 114.08, 116.45), (48.30, 46.27, 48.14),
        (111.07, 114.04, 118.18), (49.41, 47.01, 47.94),
        "SECOND: 6 land-cover classes, 512 px tiles, 0.5-3 m aerial RGB",
    ),
    "landsat-scd": Preset(
        "landsat-scd", "semantic", LANDSAT_SCD_CLASSES, 512,
        (141.53, 139.20, 137.73), (81.99, 83.31, 83.89),
        (137.36, 136.50, 135.144), (85.97, 86.01, 86.81),
        "Landsat-SCD: 4 land-cover classes, 30 m Landsat RGB (416 px resized to 512)",
    ),
    "binary": Preset(
        "binary", "binary", (), 256,
        IMAGENET_MEAN, IMAGENET_STD, IMAGENET_MEAN, IMAGENET_STD,
        "Binary change (LEVIR-CD style): ImageNet normalisation, 256 px tiles",
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
