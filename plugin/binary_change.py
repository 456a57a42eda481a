"""``scd:binarychange``: where change happened, as a 0/1 mask, from a binary or a semantic model."""

from __future__ import annotations

from typing import Any, ClassVar

from ..core.models.names import titles_for_task
from ..core.product_table import BY_NAME
from .change_algorithm import COMMON_HELP, ChangeAlgorithm


class BinaryChangeAlgorithm(ChangeAlgorithm):
    """Runs any change model and writes the change mask, optional probability and polygons."""

    OUTPUT_CHANGE = BY_NAME["change_mask"].parameter

    task = "binary"
    offered: ClassVar[tuple[str, ...]] = ("change_mask", "change_prob", "polygons")

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
        return f"""
<p>Finds where something changed between two images of the same area. Works with binary change models
({networks["binary"]}) and with semantic ones ({networks["semantic"]}), whose change decision it uses without the
classes.</p>
""" + COMMON_HELP + """
<p><b>Outputs.</b> <i>Change mask</i>: 1 where the model found change (drawn in the model's change colour), 0 where
it did not (transparent). <i>Change probability</i> (optional): how sure the model is that each pixel changed (0 to
1). <i>Change polygons</i> (optional): one polygon per connected change patch with its area in m².</p>
<p>To see <i>what</i> each area became, use <i>Semantic change (from-to)</i> with a semantic model; its per-date
class maps are only meaningful inside changed areas.</p>
"""
