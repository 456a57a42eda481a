"""How QGIS draws each product, read from the products table (no engine import, so no torch)."""

from __future__ import annotations

from ..core.colors import PROBABILITY_RAMP
from ..core.legend import LegendEntry
from ..core.matrix import TransitionRow
from ..core.product_table import BY_NAME
from ..core.products import Legends, polygon_source
from .styling import Palette, PolygonCategories, ProbabilityRamp, Style, swatches_from_legend


def present_codes(transitions: list[TransitionRow]) -> set[int]:
    """From-to codes the output holds (and 0), so the map legend lists only transitions that happened."""
    return {0} | {row.value for row in transitions if row.pixels}


def styles_for(written: dict[str, str], legends: Legends, transitions: list[TransitionRow]) -> dict[str, Style]:
    """How QGIS draws each written product, read from the products table."""
    codes = polygon_source(legends.task, [n for n in written if BY_NAME.get(n) and BY_NAME[n].is_raster])
    present = present_codes(transitions) if codes == "fromto" else {0, 1}
    code_legend: list[LegendEntry] = legends.entries("fromto" if codes == "fromto" else "mask", present)
    styles: dict[str, Style] = {}
    for name in written:
        product = BY_NAME.get(name)
        if product is None or product.style is None:
            continue
        if product.style == "ramp":
            styles[name] = ProbabilityRamp(PROBABILITY_RAMP)
        elif product.style == "categories":
            styles[name] = PolygonCategories(swatches_from_legend(code_legend, present - {0}), drawn_from=codes)
        elif product.legend == "fromto":
            styles[name] = Palette(swatches_from_legend(legends.entries("fromto", present), present))
        else:
            assert product.legend is not None
            styles[name] = Palette(swatches_from_legend(legends.entries(product.legend)))
    return styles
