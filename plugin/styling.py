"""Styles for the outputs, applied by layer post-processors in QGIS's main thread.

Algorithms run in a worker thread and must not touch the project or the canvas
(QGIS #60845, #46576). They describe each style as plain data (:class:`Palette`,
:class:`ProbabilityRamp`, :class:`PolygonCategories`) and attach a
:class:`LayerStyler` to the output; QGIS calls it in the main thread when it loads
the layer. QGIS does not keep the Python object alive, so every styler is held in
:data:`LayerStyler.pending` until it has run (QGIS #47533, #48087).

QGIS inserts a loaded layer where the active layer is, so a result can land under
the T2 image and the map looks unchanged. The stylers of one run therefore share a
:class:`RunGroup`: a group at the top of the layer tree, named after the two inputs
(and numbered when that name is taken), holding the run's layers in a fixed order
(polygon outlines, the from-to or change map, then probability and class maps, which
start hidden and collapsed because they would cover the map below and their legends
would fill the panel). Each transition is listed once in the panel (:func:`legend_once`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Union

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsColorRampShader,
    QgsFillSymbol,
    QgsLayerTreeGroup,
    QgsMapLayer,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProject,
    QgsRasterLayer,
    QgsRasterShader,
    QgsRendererCategory,
    QgsSingleBandPseudoColorRenderer,
    QgsSingleSymbolRenderer,
    QgsSymbolLayerUtils,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

from ..core.legend import LegendEntry

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Swatch:
    """One value of a categorical output: how it is drawn and what the legend says."""

    value: int
    color: RGB
    alpha: int
    label: str


@dataclass(frozen=True)
class Palette:
    """A paletted raster renderer; a swatch with alpha 0 (no change) draws transparent."""

    swatches: tuple[Swatch, ...]


@dataclass(frozen=True)
class ProbabilityRamp:
    """A pseudocolour renderer over a fixed 0..1 range, so two runs look alike."""

    stops: tuple[tuple[float, RGB], ...]


@dataclass(frozen=True)
class PolygonCategories:
    """A categorized renderer on the polygons' ``value`` field, filled in the colours of the map they come from.

    ``drawn_from`` names that map's product (``fromto`` or ``change_mask``): see :func:`legend_once`.
    """

    swatches: tuple[Swatch, ...]
    drawn_from: str = ""


@dataclass(frozen=True)
class PolygonOutlines:
    """One outline symbol for every patch, drawn over the map the polygons come from, which carries the legend."""

    color: RGB = (30, 30, 30)
    width_mm: float = 0.3


# Union, not |: the plugin must import (and explain itself) even under an older Python.
Style = Union[Palette, ProbabilityRamp, PolygonCategories, PolygonOutlines]  # noqa: UP007


def legend_once(styles: Mapping[str, Style], loaded: Collection[str]) -> dict[str, Style]:
    """The styles of a run's outputs, with each transition in the layer panel's legend once.

    The polygons repeat their map's legend entry for entry. When the map they come from is
    loaded with them (``loaded``: the products QGIS will load), the map's legend names every
    colour and the patches need no legend of their own: the polygons get one outline symbol,
    which delineates each patch over the map's colours. When it is not (only the polygons were
    asked for, or the map is not opened), the polygons keep their categories, filled in the
    map's colours, so that the legend reads as the map's would.
    """
    return {name: PolygonOutlines() if isinstance(style, PolygonCategories) and style.drawn_from in loaded
            else style for name, style in styles.items()}


def swatches_from_legend(entries: Sequence[LegendEntry], keep: set[int] | None = None) -> tuple[Swatch, ...]:
    """Swatches of legend entries; ``keep`` limits them to the values present in the output."""
    return tuple(Swatch(e.value, e.color, e.alpha, e.label) for e in entries if keep is None or e.value in keep)


#: Top-to-bottom order of a run's layers in its group, by output name; later names sit lower.
LAYER_ORDER = ("polygons", "fromto", "change_mask", "change_prob", "t2_classes", "t1_classes")
#: Outputs that start unchecked: they cover the whole area (probability) or only repeat what the
#: from-to map shows (class maps inside change), and would hide the layers below.
HIDDEN_AT_START = ("change_prob", "t1_classes", "t2_classes")
#: Layer tree property holding a layer's place in :data:`LAYER_ORDER`.
ORDER_PROPERTY = "semantic_change/order"
#: Layer property (kept in the project) naming the product a layer shows: it is never preselected as an input.
OUTPUT_PROPERTY = "semantic_change/product"


@dataclass(eq=False)
class RunGroup:
    """The layer tree group one run's layers go into, made when the first of them loads (main thread)."""

    name: str
    group: QgsLayerTreeGroup | None = field(default=None, repr=False)

    @property
    def suffix(self) -> str:
        """What tells this run from an earlier one of the same name (`` (2)``), also given to its layers."""
        return self.group.name()[len(self.name):] if self.group is not None else ""

    def place(self, layer: QgsMapLayer, output: str, project: QgsProject) -> None:
        """Move ``layer`` into this run's group at the top of the tree, in :data:`LAYER_ORDER`."""
        root = project.layerTreeRoot()
        if self.group is None or root.findGroup(self.group.name()) is not self.group:
            self.group = root.insertGroup(0, unique_group_name(root, self.name))
        rank = LAYER_ORDER.index(output) if output in LAYER_ORDER else len(LAYER_ORDER)
        # Below the last placed layer that ranks above (or with) this one, counting every child: QGIS may
        # have loaded this layer into the group itself (the layer panel's current node is the insertion point).
        index = 0
        for position, child in enumerate(self.group.children()):
            placed_rank = child.customProperty(ORDER_PROPERTY)
            if placed_rank is not None and int(placed_rank) <= rank:
                index = position + 1
        loaded_at = root.findLayer(layer.id())
        # Insert first, then remove the old node: a layer whose last node leaves the tree leaves the project.
        placed = self.group.insertLayer(index, layer)
        if loaded_at is not None and loaded_at.parent() is not None:
            loaded_at.parent().removeChildNode(loaded_at)
        placed.setCustomProperty(ORDER_PROPERTY, rank)
        hidden = output in HIDDEN_AT_START
        placed.setItemVisibilityChecked(not hidden)
        placed.setExpanded(not hidden)  # a hidden layer's legend (a ramp, every class) would fill the panel


def unique_group_name(root: QgsLayerTreeGroup, name: str) -> str:
    """``name``, or ``name (2)``, ``name (3)`` ... when a group of that name is already in the tree."""
    candidate, number = name, 1
    while root.findGroup(candidate) is not None:
        number += 1
        candidate = f"{name} ({number})"
    return candidate


class LayerStyler(QgsProcessingLayerPostProcessorInterface):
    """Applies one :data:`Style` (and optionally a layer name and run group) when QGIS loads an output."""

    #: Stylers waiting to run; QGIS holds only a C++ pointer, so Python must keep them alive.
    pending: ClassVar[set[LayerStyler]] = set()

    def __init__(self, style: Style, name: str | None = None, run: RunGroup | None = None,
                 output: str = "") -> None:
        super().__init__()
        self.style = style
        self.name = name
        self.run = run
        self.output = output

    @classmethod
    def attach(cls, context: QgsProcessingContext, destination: str, style: Style, name: str | None = None,
               run: RunGroup | None = None, output: str = "") -> None:
        """Style ``destination``, which ``context`` will load on completion, and name it ``name`` if given.

        With ``run``, the layer goes into that run's group at the top of the layer tree;
        ``output`` (an engine product name) gives its place there.
        """
        styler = cls(style, name, run, output)
        cls.pending.add(styler)
        details = context.layerToLoadOnCompletionDetails(destination)
        if name:
            details.name = name
            if hasattr(details, "forceName"):
                details.forceName = True
        details.setPostProcessor(styler)

    def postProcessLayer(self, layer: QgsMapLayer, context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> None:
        try:
            layer.setCustomProperty(OUTPUT_PROPERTY, self.output or "output")
            apply_style(layer, self.style)
            if self.run is not None:
                self.run.place(layer, self.output, context.project() or QgsProject.instance())
            if self.name:
                layer.setName(self.name + (self.run.suffix if self.run is not None else ""))
        finally:
            LayerStyler.pending.discard(self)


def apply_style(layer: QgsMapLayer, style: Style) -> None:
    """Set the renderer ``style`` describes on ``layer`` (main thread only)."""
    if isinstance(style, Palette) and isinstance(layer, QgsRasterLayer):
        classes = [QgsPalettedRasterRenderer.Class(s.value, _color(s), s.label) for s in style.swatches]
        layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes))
    elif isinstance(style, ProbabilityRamp) and isinstance(layer, QgsRasterLayer):
        ramp = QgsColorRampShader(0.0, 1.0)
        ramp.setColorRampType(QgsColorRampShader.Interpolated)
        ramp.setColorRampItemList([
            QgsColorRampShader.ColorRampItem(value, QColor(*rgb), f"{value:.2f}") for value, rgb in style.stops
        ])
        shader = QgsRasterShader(0.0, 1.0)
        shader.setRasterShaderFunction(ramp)
        renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
        renderer.setClassificationMin(0.0)
        renderer.setClassificationMax(1.0)
        layer.setRenderer(renderer)
    elif isinstance(style, PolygonCategories) and isinstance(layer, QgsVectorLayer):
        categories = []
        for s in style.swatches:
            color = _color(s)
            symbol = QgsFillSymbol.createSimple({"color": QgsSymbolLayerUtils.encodeColor(color),
                                                 "outline_color": QgsSymbolLayerUtils.encodeColor(color.darker(160)),
                                                 "outline_width": "0.26"})
            categories.append(QgsRendererCategory(s.value, symbol, s.label))
        layer.setRenderer(QgsCategorizedSymbolRenderer("value", categories))
    elif isinstance(style, PolygonOutlines) and isinstance(layer, QgsVectorLayer):
        symbol = QgsFillSymbol.createSimple({"style": "no", "outline_color": QgsSymbolLayerUtils.encodeColor(
            QColor(*style.color)), "outline_width": f"{style.width_mm:g}"})
        layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    else:
        return
    layer.triggerRepaint()


def _color(swatch: Swatch) -> QColor:
    return QColor(swatch.color[0], swatch.color[1], swatch.color[2], swatch.alpha)
