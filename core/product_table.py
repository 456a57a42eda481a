"""Every product the engine and the plugin know, described once as data.

Plain Python with no third-party import, so the QGIS plugin can build its parameters
from it at load time, before it knows whether the engine's dependencies are there.
:mod:`.products` writes them; ``plugin/`` offers and styles them from this table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: Tasks: a semantic network, a binary network, and the comparison of two land-cover maps.
SEMANTIC, BINARY, COMPARE = "semantic", "binary", "compare"


@dataclass(frozen=True)
class Product:
    """One output, as data.

    Attributes:
        name: Its key everywhere in core (:class:`~.engine.OutputPaths` field,
            ``RunSummary.outputs``).
        parameter: The Processing output parameter of the algorithms that offer it.
        titles: What the parameter is called, per task.
        kind: ``raster``, ``table`` (CSV), ``vector`` or ``report`` (HTML, written by the plugin).
        legend: For rasters, ``fromto``, ``classes``, ``mask`` or ``probability``.
        dtype: Fixed data type of a raster; None where it grows with the number of classes.
        tasks: The tasks that can write it.
        style: How QGIS draws it: ``palette`` (paletted raster), ``ramp`` (fixed 0..1
            pseudocolour), ``categories`` (categorized polygons) or None.
    """

    name: str
    parameter: str
    titles: Mapping[str, str]
    kind: str
    tasks: frozenset[str]
    legend: str | None = None
    dtype: str | None = None
    style: str | None = None

    def title(self, task: str) -> str:
        return self.titles.get(task) or self.titles["default"]

    @property
    def is_raster(self) -> bool:
        return self.kind == "raster"


_ALL = frozenset({SEMANTIC, BINARY, COMPARE})

#: Every product, in the order the algorithms list them.
PRODUCTS: tuple[Product, ...] = (
    Product("fromto", "OUTPUT_FROMTO", {"default": "From-to change"}, "raster",
            frozenset({SEMANTIC, COMPARE}), legend="fromto", style="palette"),
    Product("t1_classes", "OUTPUT_T1_CLASSES",
            {"default": "Land cover of T1 (inside change)", COMPARE: "Land cover of T1 (harmonised classes)"},
            "raster", frozenset({SEMANTIC, COMPARE}), legend="classes", style="palette"),
    Product("t2_classes", "OUTPUT_T2_CLASSES",
            {"default": "Land cover of T2 (inside change)", COMPARE: "Land cover of T2 (harmonised classes)"},
            "raster", frozenset({SEMANTIC, COMPARE}), legend="classes", style="palette"),
    Product("change_mask", "OUTPUT_CHANGE", {"default": "Change mask"}, "raster", _ALL,
            legend="mask", dtype="uint8", style="palette"),
    Product("change_prob", "OUTPUT_CHANGE_PROB", {"default": "Change probability"}, "raster",
            frozenset({SEMANTIC, BINARY}), legend="probability", dtype="float32", style="ramp"),
    Product("polygons", "OUTPUT_POLYGONS", {"default": "Change polygons"}, "vector", _ALL, style="categories"),
    Product("report", "OUTPUT_REPORT", {"default": "Transition report"}, "report", frozenset({SEMANTIC, COMPARE})),
    Product("transitions_csv", "OUTPUT_REPORT_CSV", {"default": "Transition matrix (CSV)"}, "table",
            frozenset({SEMANTIC, COMPARE})),
)

#: Products by name.
BY_NAME: dict[str, Product] = {p.name: p for p in PRODUCTS}

#: The raster products, by name.
RASTERS: tuple[str, ...] = tuple(p.name for p in PRODUCTS if p.is_raster)


def products_for(task: str) -> tuple[Product, ...]:
    """The products a task can write, in table order."""
    return tuple(p for p in PRODUCTS if task in p.tasks)


def code_product(task: str) -> str:
    """The raster the sieve, the polygons and every count work on: from-to codes where there are classes."""
    return "fromto" if task in (SEMANTIC, COMPARE) else "change_mask"
