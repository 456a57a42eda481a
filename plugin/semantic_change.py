"""``scd:semanticchange``: a from-to change map ("Low vegetation -> Building") from two dates."""

from __future__ import annotations

from typing import Any, ClassVar

from ..core.models.names import titles_for_task
from ..core.product_table import BY_NAME
from .change_algorithm import COMMON_HELP, ChangeAlgorithm


class SemanticChangeAlgorithm(ChangeAlgorithm):
    """Runs a semantic change model and writes the from-to map, optional class maps, polygons and report."""

    OUTPUT_FROMTO = BY_NAME["fromto"].parameter
    OUTPUT_T1_CLASSES = BY_NAME["t1_classes"].parameter
    OUTPUT_T2_CLASSES = BY_NAME["t2_classes"].parameter
    OUTPUT_REPORT = BY_NAME["report"].parameter
    OUTPUT_REPORT_CSV = BY_NAME["transitions_csv"].parameter

    task = "semantic"
    offered: ClassVar[tuple[str, ...]] = ("fromto", "t1_classes", "t2_classes", "change_prob", "polygons", "report",
                                          "transitions_csv")

    def name(self) -> str:
        return "semanticchange"

    def displayName(self) -> str:
        return "Semantic change (from-to)"

    def shortDescription(self) -> str:
        return "What became what between two dates, as a styled from-to map with areas."

    def tags(self) -> list[str]:
        return ["change detection", "semantic change", "from-to", "land cover", "transition", "deep learning"]

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.add_inputs()
        self.add_product("fromto", optional=False)
        self.add_product("t1_classes")
        self.add_product("t2_classes")
        self.add_common_outputs()
        self.add_product("report")
        self.add_product("transitions_csv")

    def shortHelpString(self) -> str:
        networks = ", ".join(titles_for_task("semantic"))
        return f"""
<p>Finds what changed between two images of the same area and what it became, with a semantic change model
({networks}). The main result is a <b>from-to map</b>: every changed pixel holds a transition such as
<i>Low vegetation -> Building</i>; unchanged pixels are transparent. The layer's legend lists the transitions found,
in colours of the class each area became.</p>
""" + COMMON_HELP + """
<p><b>Outputs.</b> <i>From-to change</i>: the transition map (GeoTIFF, with its legend stored beside it so other
GIS software shows the same labels). <i>Land cover of T1 / T2</i> (optional): the class at each date,
<b>only meaningful inside changed areas</b>: the networks learn land-cover classes only where change happened,
so unchanged pixels are 0 (no change) in these maps. <i>Change probability</i> (optional): how sure the model is that
each pixel changed (0 to 1). <i>Change polygons</i> (optional): one polygon per connected patch of one transition,
with its from and to classes, label and area in m². <i>Transition report</i> (optional): the transition matrix with
areas as an HTML page with a chart, and the same numbers as a CSV file beside it.</p>
<p>A model file for binary change cannot make a from-to map: use <i>Binary change</i> with it.</p>
"""
