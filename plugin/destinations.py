"""Output files checked before a run starts (and before torch is imported): see ``core/pathguard.py``.

Kept apart from :mod:`.runner` (which imports the engine, and so torch) so that a
refused destination is reported at once, whoever calls the algorithm.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from qgis.core import QgsProcessingException

from ..core import pathguard
from ..core.errors import ChangeDetectionError

if TYPE_CHECKING:
    from .change_algorithm import RunRequest


def check_destinations(request: RunRequest, inputs: dict[str, str], names: dict[str, str]) -> None:
    """Refuse, before anything is read, outputs that would overwrite an input, the model or each other.

    ``inputs`` are the layers' own sources (files or GDAL connection strings), not the
    temporary copies the engine may read. A Processing destination is the user's
    explicit choice of file (QGIS asks before an existing file is picked, and its own
    algorithms replace their destinations), so it may replace an existing file; the
    CSV the report brings along is named by the plugin, so it may replace only a
    transitions CSV of an earlier run. ``names`` maps products to the parameter names the user sees.
    """
    outputs = [pathguard.Output(names.get(product, product), path, "raster", overwrite=True)
               for product, path in request.rasters.items()]
    if request.polygons:
        outputs.append(pathguard.Output(names.get("polygons", "polygons"), request.polygons, "vector",
                                        overwrite=True))
    if request.report:
        report = names.get("report", "report")
        outputs.append(pathguard.Output(report, request.report, "document", overwrite=True))
        outputs.append(pathguard.Output(f"{report}'s transitions CSV", csv_beside_report(request.report), "table"))
    try:
        pathguard.check_outputs(outputs, inputs=inputs, model=request.model or None)
    except ChangeDetectionError as error:
        raise QgsProcessingException(str(error)) from error


def csv_beside_report(report: str) -> str:
    """The transitions CSV the report links to: its name with ``.csv``."""
    return str(Path(report).with_suffix(".csv"))
