"""``scd:semanticchange``: a from-to change map ("Low vegetation -> Building") from two dates."""

from __future__ import annotations

from typing import Any, ClassVar

from ..core.models.names import titles_for_task
from ..core.product_table import BY_NAME
from .change_algorithm import COMMON_HELP, ChangeAlgorithm, help_text


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
    parameter_help: ClassVar[dict[str, str]] = {
        OUTPUT_FROMTO: "What became what: one code per transition, with its legend stored beside the GeoTIFF.",
        OUTPUT_T1_CLASSES: "Land cover at T1, only inside changed areas (0 elsewhere).",
        OUTPUT_T2_CLASSES: "Land cover at T2, only inside changed areas (0 elsewhere).",
        OUTPUT_REPORT: "An HTML page with the areas of every transition and the transition matrix; a CSV with "
                       "the same numbers is written beside it.",
    }

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
        return help_text(
            "Finds what changed between two images of the same area and what it became, with a semantic change "
            f"model ({', '.join(titles_for_task('semantic'))}). The main result is a <b>from-to map</b> whose legend "
            "lists the transitions found (<i>Low vegetation -> Building</i>); unchanged pixels are transparent.",
            *COMMON_HELP,
            "<b>Outputs:</b> the from-to map; optionally the land cover of each date (<b>only meaningful inside "
            "changed areas</b>: the networks learn classes only where change happened), change probability, "
            "change polygons and a report with the areas of every transition (HTML, and CSV beside it).",
            "<i>Changed (Water, class unresolved)</i>: the network found change but the same class at both "
            "dates, so what the area became is not known.",
            "A binary change model cannot make a from-to map: use <i>Binary change</i> with it.",
        )
