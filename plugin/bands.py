"""What the bands fed to the model are, and whether they look like what the model expects.

A 4-band Landsat image (SWIR1, NIR, Red, Green) fed as bands 1-3 into a model
trained on RGB runs without error and gives nonsense. The files often say what
their bands are, in the band description or the colour interpretation, so each
run logs the bands used per date with both, and warns when they contradict the
model's band order. A model trained on a set that ``training_cli prepare`` cut
carries what its source files said each band was, and its bands are expected; a
3-band model without that record (every dataset preset) is trained on true-colour
red, green, blue, in that order; for other band counts nothing is assumed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from osgeo import gdal

#: What a 3-band model expects, in order (every dataset preset is true-colour RGB).
RGB = ("red", "green", "blue")

#: Words in a band description that name what the band holds; checked in this order, so
#: "near infrared" is not taken for "red".
_DESCRIPTION_WORDS = (
    (re.compile(r"swir|short[- ]?wave|nir|near[- ]?infra|infra[- ]?red|\bir\b|thermal|tir\b", re.I), "infrared"),
    (re.compile(r"\bred\b|^r$|rouge|\brot\b", re.I), "red"),
    (re.compile(r"green|^g$|vert|gr[üu]n", re.I), "green"),
    (re.compile(r"blue|^b$|bleu|blau", re.I), "blue"),
    (re.compile(r"alpha", re.I), "alpha"),
)
#: GDAL colour interpretations that say what a band is (gray and undefined say nothing).
_COLOUR_INTERPRETATIONS = {gdal.GCI_RedBand: "red", gdal.GCI_GreenBand: "green", gdal.GCI_BlueBand: "blue",
                           gdal.GCI_AlphaBand: "alpha"}


@dataclass(frozen=True)
class BandInfo:
    """One band of an input as the file describes it."""

    number: int
    description: str
    colour: str  # GDAL's colour interpretation name, e.g. "Red", "Gray", "Undefined"
    meaning: str | None  # "red", "green", "blue", "infrared", "alpha", or None when the file does not say

    def __str__(self) -> str:
        parts = [f"'{self.description}'" if self.description else "no description", f"colour {self.colour}"]
        return f"{self.number} ({', '.join(parts)})"


def read_bands(path: str, numbers: Sequence[int]) -> list[BandInfo]:
    """Descriptions and colour interpretations of bands ``numbers`` of ``path`` (bands not in the file are left out)."""
    dataset = gdal.OpenEx(path, gdal.OF_RASTER)
    if dataset is None:
        return []
    infos = []
    for number in numbers:
        if not 1 <= number <= dataset.RasterCount:
            continue
        band = dataset.GetRasterBand(number)
        description = (band.GetDescription() or "").strip()
        interpretation = band.GetColorInterpretation()
        infos.append(BandInfo(number, description, gdal.GetColorInterpretationName(interpretation),
                              _meaning(description, interpretation)))
    return infos


def _meaning(description: str, interpretation: int) -> str | None:
    for pattern, meaning in _DESCRIPTION_WORDS:
        if description and pattern.search(description):
            return meaning
    return _COLOUR_INTERPRETATIONS.get(interpretation)


def contradictions(infos: Sequence[BandInfo], expected: Sequence[str | None] | None) -> list[str]:
    """Plain-words problems where a band's description or colour says something other than the model expects
    (an expectation of ``None`` accepts any band)."""
    if not expected or len(infos) != len(expected):
        return []
    problems = []
    for position, (info, wanted) in enumerate(zip(infos, expected, strict=True), start=1):
        if info.meaning is not None and wanted is not None and info.meaning != wanted:
            problems.append(f"input band {position} of the model should be {wanted}, but band {info} looks like "
                            f"{info.meaning}")
    return problems


def expected_bands(band_count: int, described: Sequence[Sequence[str]] | None = None) -> tuple[str | None, ...] | None:
    """What the model's input bands should hold, in order, when that is known.

    Args:
        band_count: Bands the model takes per date.
        described: ``[description, colour interpretation name]`` of each band of the training imagery, as the
            model card records them (``training.data.band_descriptions``); ``None`` when it does not.
    """
    if described:
        colours = {name.lower(): value for value, name in (
            (gdal.GCI_RedBand, "red"), (gdal.GCI_GreenBand, "green"), (gdal.GCI_BlueBand, "blue"),
            (gdal.GCI_AlphaBand, "alpha"))}
        meanings = tuple(_meaning(str(d[0]), colours.get(str(d[1]).lower(), gdal.GCI_Undefined)) for d in described)
        return meanings if len(meanings) == band_count and any(meanings) else None
    return RGB if band_count == len(RGB) else None


def trained_bands(training: dict, date: str) -> list[list[str]] | None:
    """The card's record of what the training imagery's bands of ``date`` (``"t1"``/``"t2"``) were, if any."""
    data = training.get("data") if isinstance(training, dict) else None
    described = data.get("band_descriptions") if isinstance(data, dict) else None
    return described.get(date) if isinstance(described, dict) else None
