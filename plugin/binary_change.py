"""``scd:binarychange``: where change happened, as a 0/1 mask, from a binary or a semantic model."""

from __future__ import annotations

from typing import Any, ClassVar

from ..core.models.names import titles_for_task
from ..core.product_table import BY_NAME
from .change_algorithm import COMMON_HELP, ChangeAlgorithm, help_text


class BinaryChangeAlgorithm(ChangeAlgorithm):
    """Runs any change model and writes the change mask, optional probability and polygons."""

    OUTPUT_CHANGE = BY_NAME["change_mask"].parameter

    task = "binary"
    offered: ClassVar[tuple[str, ...]] = ("change_mask", "change_prob", "polygons")
    parameter_help: ClassVar[dict[str, str]] = {
        OUTPUT_CHANGE: "1 where the model found change, 0 where it did not.",
    }

    def name(self) -> str:
        return "binarychange"

    def displayName(self) -> str:
        return "Binary change"

    def shortDescription(self) -> str:
        return "Where change happened between two dates, as a change mask."

    def tags(self) -> list[str]:
        return ["change detection", "binary change", "change mask", "deep learning"]

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.add_inputs()
        self.add_product("change_mask", optional=False)
        self.add_common_outputs()

    def shortHelpString(self) -> str:
        networks = {task: ", ".join(titles_for_task(task)) for task in ("binary", "semantic")}
        return help_text(
            "Finds where something changed between two images of the same area, with a binary change model "
            f"({networks['binary']}) or a semantic one ({networks['semantic']}), whose change decision it uses.",
            *COMMON_HELP,
            "<b>Outputs:</b> a change mask (1: change, in the model's change colour; 0: transparent); optionally "
            "change probability and change polygons with their areas.",
            "To see what each area became, use <i>Semantic change (from-to)</i> with a semantic model; its per-date "
            "class maps are only meaningful inside changed areas.",
        )
