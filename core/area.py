"""The processing area a user asks for: an extent and mask polygons, checked before any pixel is read.

A run may be limited to an extent ``(xmin, ymin, xmax, ymax)`` and to mask polygons,
both in T1's CRS (:class:`~.engine.RunOptions`, the plugin's "Processing extent" and
"Mask layer"). Each way of getting them wrong used to end in a silent wrong result or a
misleading sentence: a NaN coordinate was ignored (the whole scene ran), an inverted
extent was said to "lie outside" the images, a mask far from the scene gave a map of
nodata reported as a success, and anything that was not a polygon reached the
rasteriser as a raw ``ValueError``. The checks here say what is wrong instead:

* :func:`check_extent`: four finite numbers, ``xmin < xmax`` and ``ymin < ymax``;
* :func:`check_mask`: polygons (GeoJSON-like dicts, as QGIS's ``asJson`` gives them),
  at least one of them overlapping the processing area.

They are pure functions (GDAL's OGR for the geometry, no raster is opened), so the
engine and the plugin call the same rule with the names the user knows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import InputError

Bounds = tuple[float, float, float, float]

#: The geometry types a mask may hold: pixels inside them are processed.
POLYGON_TYPES = ("Polygon", "MultiPolygon")

_EXTENT_HELP = "give it as xmin, ymin, xmax, ymax in T1's CRS, or leave it empty to process the whole overlap"


def describe_bounds(bounds: Sequence[float]) -> str:
    """``(xmin, ymin, xmax, ymax)`` as a message prints it."""
    return "(" + ", ".join(f"{v:.6g}" for v in bounds) + ")"


def check_extent(extent: Sequence[float] | None, label: str = "the processing extent") -> Bounds | None:
    """The extent as four floats, or None; refuses one that cannot describe an area.

    Args:
        extent: ``(xmin, ymin, xmax, ymax)`` in T1's CRS, or None (no extent).
        label: How the message names it (the plugin names its parameter).

    Raises:
        InputError: for a value that is not a number, NaN or infinite, or a minimum not
            below its maximum (an inverted or empty extent), saying which.
    """
    if extent is None:
        return None
    try:
        values = tuple(float(v) for v in extent)
    except (TypeError, ValueError):
        raise InputError(f"{label} {extent!r} is not four numbers; {_EXTENT_HELP}") from None
    if len(values) != 4:
        raise InputError(f"{label} has {len(values)} values instead of four; {_EXTENT_HELP}")
    names = ("xmin", "ymin", "xmax", "ymax")
    bad = [f"{name} is {value}" for name, value in zip(names, values, strict=True) if not math.isfinite(value)]
    if bad:
        raise InputError(f"{label} {describe_bounds(values)} is not a number everywhere ({', '.join(bad)}); "
                         f"{_EXTENT_HELP}")
    xmin, ymin, xmax, ymax = values
    for axis, low, high in (("x", xmin, xmax), ("y", ymin, ymax)):
        if high < low:
            raise InputError(f"{label} {describe_bounds(values)} is inverted: its {axis}max ({high:.6g}) is less "
                             f"than its {axis}min ({low:.6g}); {_EXTENT_HELP}")
        if high == low:
            raise InputError(f"{label} {describe_bounds(values)} has no {'width' if axis == 'x' else 'height'} "
                             f"({axis}min and {axis}max are both {low:.6g}); {_EXTENT_HELP}")
    return xmin, ymin, xmax, ymax


def check_mask(mask: Sequence[Any] | None, area: Bounds | None = None, *, label: str = "the mask",
               crs: str = "T1's CRS", item: str = "item") -> list[dict[str, Any]] | None:
    """The mask polygons as plain dicts, or None; refuses what is not polygons or lies outside ``area``.

    Args:
        mask: GeoJSON-like geometry dicts (or JSON strings of them) in T1's CRS, or None (no mask).
        area: The processing area ``(xmin, ymin, xmax, ymax)``; None checks the geometries only.
        label: How the message names the mask (the plugin names the layer).
        crs: How the message names the CRS of ``area``.
        item: What the message calls one geometry (the plugin says "feature").

    Raises:
        InputError: for an empty mask, an item that is not a geometry, a geometry that is
            not a polygon, or polygons of which none overlaps ``area``.
    """
    if mask is None:
        return None
    geometries = _geometries(mask, label, item)
    if not geometries:
        raise InputError(f"{label} holds no polygons, so every pixel would be nodata; give polygons that cover "
                         "the area to process, or no mask")
    if area is not None:
        box = _ogr_box(area)
        if not any(geometry.Intersects(box) for _, geometry in geometries):
            extent = _union_envelope([geometry for _, geometry in geometries])
            raise InputError(
                f"{label} ({len(geometries)} polygon{'s' if len(geometries) != 1 else ''} within "
                f"{describe_bounds(extent)}) does not overlap the processing area {describe_bounds(area)} in {crs}, "
                "so every pixel would be nodata; choose a mask over the images (is it in another CRS, or of "
                "another place?)")
    return [plain for plain, _ in geometries]


def _geometries(mask: Sequence[Any], label: str, item: str = "item") -> list[tuple[dict[str, Any], Any]]:
    if isinstance(mask, (str, bytes, Mapping)) or not isinstance(mask, Iterable):
        raise InputError(f"{label} must be a list of polygons (GeoJSON-like geometries), got {type(mask).__name__}")
    return [_geometry(value, f"{label}: {item} {index}") for index, value in enumerate(mask, start=1)]


def _geometry(item: Any, where: str) -> tuple[dict[str, Any], Any]:
    """One mask item as a plain dict and an OGR geometry, or a message (``where`` names it) saying what it is."""
    from osgeo import gdal, ogr

    if isinstance(item, (str, bytes)):
        try:
            item = json.loads(item)
        except ValueError:
            raise InputError(f"{where} is text that is not a GeoJSON geometry; a mask is polygons") from None
    if hasattr(item, "__geo_interface__"):
        item = item.__geo_interface__
    if not isinstance(item, Mapping) or "type" not in item:
        raise InputError(f"{where} is {type(item).__name__}, not a geometry; a mask is a list of polygons "
                         "(GeoJSON-like dicts with 'type' and 'coordinates')")
    kind = item.get("type")
    if kind not in POLYGON_TYPES:
        raise InputError(f"{where} is a {kind} geometry; a mask is polygons (the area inside them is processed): "
                         "choose a polygon layer, or buffer points and lines into polygons first")
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        geometry = ogr.CreateGeometryFromJson(json.dumps(item, default=_as_list))
    except (TypeError, ValueError, RuntimeError):
        geometry = None
    finally:
        gdal.PopErrorHandler()
    if geometry is None or geometry.IsEmpty():
        raise InputError(f"{where} is a {kind} without usable coordinates; check the mask's geometries")
    return dict(item), geometry


def _as_list(value: Any) -> list[Any]:
    """Coordinates given as tuples or numpy arrays, as JSON lists."""
    try:
        return list(value)
    except TypeError:
        raise TypeError(f"{type(value).__name__} is not a coordinate") from None


def _ogr_box(bounds: Bounds) -> Any:
    from osgeo import ogr

    xmin, ymin, xmax, ymax = bounds
    ring = ogr.Geometry(ogr.wkbLinearRing)
    for x, y in ((xmin, ymin), (xmax, ymin), (xmax, ymax), (xmin, ymax), (xmin, ymin)):
        ring.AddPoint_2D(x, y)
    box = ogr.Geometry(ogr.wkbPolygon)
    box.AddGeometry(ring)
    return box


def mask_bounds(mask: Sequence[Any]) -> Bounds:
    """``(xmin, ymin, xmax, ymax)`` around every polygon of a mask (checked as :func:`check_mask` does)."""
    return _union_envelope([geometry for _, geometry in _geometries(mask, "the mask")])


def _union_envelope(geometries: list[Any]) -> Bounds:
    envelopes = [geometry.GetEnvelope() for geometry in geometries]  # (minx, maxx, miny, maxy)
    return (min(e[0] for e in envelopes), min(e[2] for e in envelopes),
            max(e[1] for e in envelopes), max(e[3] for e in envelopes))


def grid_bounds(transform: Any, width: int, height: int) -> Bounds:
    """``(xmin, ymin, xmax, ymax)`` of a ``width`` x ``height`` grid with an affine ``transform``
    (any orientation: north-up, south-up or rotated)."""
    corners = [transform * (col, row) for col in (0, width) for row in (0, height)]
    xs, ys = [x for x, _ in corners], [y for _, y in corners]
    return min(xs), min(ys), max(xs), max(ys)
