"""Styles for the outputs, applied by layer post-processors in QGIS's main thread.

Algorithms run in a worker thread and must not touch the project or the canvas
(QGIS #60845, #46576). They describe each style as plain data (:class:`Palette`,
:class:`ProbabilityRamp`, :class:`PolygonCategories`) and attach a
:class:`LayerStyler` to the output; QGIS calls it in the main thread when it loads
the layer. QGIS does not keep the Python object alive, so every styler is held in
:data:`LayerStyler.pending` until it has run (QGIS #47533, #48087).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Union

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsColorRampShader,
    QgsFillSymbol,
    QgsMapLayer,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRasterShader,
    QgsRendererCategory,
    QgsSingleBandPseudoColorRenderer,
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
    """A categorized renderer on the polygons' ``value`` field, in the raster's colours."""

    swatches: tuple[Swatch, ...]


# Union, not |: the plugin must import (and explain itself) even under an older Python.
Style = Union[Palette, ProbabilityRamp, PolygonCategories]  # noqa: UP007


def swatches_from_legend(entries: Sequence[LegendEntry], keep: set[int] | None = None) -> tuple[Swatch, ...]:
    """Swatches of legend entries; ``keep`` limits them to the values present in the output."""
    return tuple(Swatch(e.value, e.color, e.alpha, e.label) for e in entries if keep is None or e.value in keep)


class LayerStyler(QgsProcessingLayerPostProcessorInterface):
    """Applies one :data:`Style` (and optionally a layer name) when QGIS loads an output."""

    #: Stylers waiting to run; QGIS holds only a C++ pointer, so Python must keep them alive.
    pending: ClassVar[set[LayerStyler]] = set()

    def __init__(self, style: Style, name: str | None = None) -> None:
        super().__init__()
        self.style = style
        self.name = name

    @classmethod
    def attach(cls, context: QgsProcessingContext, destination: str, style: Style, name: str | None = None) -> None:
        """Style ``destination``, which ``context`` will load on completion, and name it ``name`` if given."""
        styler = cls(style, name)
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
            apply_style(layer, self.style)
            if self.name:
                layer.setName(self.name)
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
            symbol = QgsFillSymbol.createSimple({"color": color.name(), "outline_color": color.darker(150).name(),
                                                 "outline_width": "0.2"})
            categories.append(QgsRendererCategory(s.value, symbol, s.label))
        layer.setRenderer(QgsCategorizedSymbolRenderer("value", categories))
    else:
        return
    layer.triggerRepaint()


def _color(swatch: Swatch) -> QColor:
    return QColor(swatch.color[0], swatch.color[1], swatch.color[2], swatch.alpha)
