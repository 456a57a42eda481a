"""The transition report: an HTML page with a chart and the from x to matrix of areas.

Plain Python (no QGIS, no torch), so it is cheap to test. The CSV with the same
numbers is written by the engine (``core.matrix.write_transition_matrix``); this
page is what the Processing results viewer opens.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..core.files import Publication, atomic_write_text, staged_name
from ..core.matrix import TransitionRow

#: How to read a network's numbers.
NETWORK_NOTE = ("Areas are on the ground, in hectares (1 ha = 10,000 m²). The diagonal of the matrix holds changed "
                "pixels whose class the network did not resolve: it found change there but the same class at both "
                "dates, so what the area became is not known (\"Changed (class, class unresolved)\" on the map). "
                "The per-date class maps are only meaningful inside changed areas: the networks learn land-cover "
                "classes only where change happened.")
#: How to read the comparison of two land-cover maps.
COMPARISON_NOTE = ("Areas are on the ground, in hectares (1 ha = 10,000 m²). The matrix is the full "
                   "cross-tabulation of the two maps: its diagonal holds the area that kept its class, its row "
                   "totals are the first map's class areas.")

#: Bars in the chart; the rest are summed as "other transitions".
MAX_BARS = 15
#: Classes up to which the page shows the from x to matrix: a comparison of thousands of classes has millions
#: of cells (the CSV beside the page holds them all), which no one reads on a page and which took a viewer down.
MAX_MATRIX_CLASSES = 60
#: Rows of the transitions table; the rest are summed in one row.
MAX_TABLE_ROWS = 500

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f2f2f2; } td.name, th.name { text-align: left; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border: 1px solid #888; margin-right: 0.4em;
          vertical-align: middle; }
.note { color: #555; font-size: 0.9em; max-width: 60em; }
.warning { background: #fff3cd; border: 1px solid #e0b000; padding: 0.5em 1em; max-width: 60em; }
"""


def format_hectares(hectares: float) -> str:
    """Hectares with the precision the number deserves: 1,234 / 56.7 / 3.45 / 0.012, not 1234.5678."""
    value = abs(hectares)
    if value == 0:
        return "0"
    if value >= 100:
        return f"{hectares:,.0f}"
    if value >= 10:
        return f"{hectares:,.1f}"
    if value >= 0.1:
        return f"{hectares:,.2f}"
    return f"{hectares:.2g}"


def raster_grid(path: str | os.PathLike[str]) -> tuple[str, str]:
    """The CRS (name and authority code) and pixel size of a raster, as the report states them."""
    from osgeo import gdal, osr

    dataset = gdal.OpenEx(str(path), gdal.OF_RASTER)
    if dataset is None:
        return "unknown", "unknown"
    reference = osr.SpatialReference(wkt=dataset.GetProjection()) if dataset.GetProjection() else None
    if reference is None:
        crs, unit = "none (pixel coordinates)", "px"
    else:
        code = reference.GetAuthorityCode(None)
        crs = f"{reference.GetName()}" + (f" ({reference.GetAuthorityName(None)}:{code})" if code else "")
        unit = "m" if reference.IsProjected() and reference.GetLinearUnits() == 1.0 else \
            (reference.GetLinearUnitsName() if reference.IsProjected() else "°")
    transform = dataset.GetGeoTransform()
    return crs, f"{abs(transform[1]):g} x {abs(transform[5]):g} {unit}"


def render_report(
    *,
    title: str,
    facts: Sequence[tuple[str, str]],
    transitions: Sequence[TransitionRow],
    colors: Mapping[int, str],
    class_names: Sequence[str],
    csv_name: str | None = None,
    note: str = NETWORK_NOTE,
    persistence_ha: Sequence[float] | None = None,
    warnings: Sequence[str] = (),
) -> str:
    """The report page.

    Args:
        title: Heading, e.g. "Semantic change: t1 -> t2".
        facts: (label, value) rows about the run (inputs, model, device, time, ...).
        transitions: Rows of :func:`core.matrix.transition_table_rows`; value 0 is "No change".
        colors: ``#rrggbb`` per from-to value, as on the map.
        class_names: Land-cover classes in order, for the matrix.
        csv_name: File name of the CSV beside the page, linked when given.
        note: The closing note on how to read the numbers (the networks' by default).
        persistence_ha: Area that kept its class, per class of ``class_names``; given, the
            matrix is the full cross-tabulation with these on its diagonal.
        warnings: What the reader must know before trusting the numbers (an untrained
            model, bands that contradict the model), shown first.
    """
    changed = [t for t in transitions if t.value != 0]
    unchanged = next((t for t in transitions if t.value == 0), None)
    changed_ha = sum(float(t.area_ha) for t in changed)
    valid_ha = changed_ha + (float(unchanged.area_ha) if unchanged else 0.0)
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        *(f'<p class="warning"><b>Warning:</b> {_e(w)}</p>' for w in warnings),
        "<table>",
        *(f'<tr><th class="name">{_e(k)}</th><td class="name">{_e(v)}</td></tr>' for k, v in facts),
        f'<tr><th class="name">Changed area</th><td class="name">{format_hectares(changed_ha)} ha'
        f"{f' ({100 * changed_ha / valid_ha:.2f} % of the area with data in both dates)' if valid_ha else ''}"
        "</td></tr>",
        "</table>",
        "<h2>Transitions by area</h2>",
        _chart(changed, colors) if changed else "<p>No change was detected.</p>",
        "<h2>Transition matrix (hectares; rows: from T1, columns: to T2)</h2>",
        _matrix(changed, class_names, unchanged, persistence_ha) if len(class_names) <= MAX_MATRIX_CLASSES else
        f'<p class="note">The matrix of {len(class_names):,} classes ({len(class_names) ** 2:,} cells) is too large '
        f"for this page{f'; it is in {_e(csv_name)}' if csv_name else ''}.</p>",
        _table(changed, colors, changed_ha),
        f'<p class="note">{_e(note)}</p>',
    ]
    if csv_name:
        parts.append(f'<p>The same numbers as CSV: <a href="{_e(csv_name)}">{_e(csv_name)}</a></p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(path: str | os.PathLike[str], page: str) -> Path:
    """Write the page so that it appears under its name only when complete."""
    return atomic_write_text(path, page)


def stage_report(publication: Publication, path: str | os.PathLike[str], page: str) -> None:
    """Write the page under a hidden name, to appear at ``path`` with the run's other files when it commits."""
    temporary = staged_name(path)
    write_report(temporary, page)
    publication.stage(temporary, path)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _chart(changed: Sequence[TransitionRow], colors: Mapping[int, str]) -> str:
    """A horizontal bar chart as inline SVG: largest transitions first, the tail summed."""
    rows = sorted(changed, key=lambda t: -float(t.area_ha))
    bars = [(t.label, float(t.area_ha), colors.get(int(t.value), "#888888")) for t in rows[:MAX_BARS]]
    rest = rows[MAX_BARS:]
    if rest:
        bars.append((f"{len(rest)} other transitions", sum(float(t.area_ha) for t in rest), "#bbbbbb"))
    largest = max(area for _, area, _ in bars) or 1.0
    label_width, bar_width, row_height = 300, 380, 22
    height = row_height * len(bars) + 10
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_width + bar_width + 120}" height="{height}" '
           'role="img" aria-label="Changed area per transition" font-family="sans-serif" font-size="12">']
    for i, (label, area, color) in enumerate(bars):
        y = 5 + i * row_height
        length = max(1.0, bar_width * area / largest)
        svg.append(f'<text x="{label_width - 6}" y="{y + 14}" text-anchor="end">{_e(label)}</text>')
        svg.append(f'<rect x="{label_width}" y="{y + 2}" width="{length:.1f}" height="{row_height - 6}" '
                   f'fill="{_e(color)}" stroke="#555" stroke-width="0.5"/>')
        svg.append(f'<text x="{label_width + length + 6:.1f}" y="{y + 14}">{format_hectares(area)} ha</text>')
    svg.append("</svg>")
    return "\n".join(svg)


def _matrix(changed: Sequence[TransitionRow], class_names: Sequence[str],
            unchanged: TransitionRow | None, persistence_ha: Sequence[float] | None = None) -> str:
    index = {name: i for i, name in enumerate(class_names)}
    n = len(class_names)
    areas = [[0.0] * n for _ in range(n)]
    for t in changed:
        if t.from_class in index and t.to_class in index:
            areas[index[t.from_class]][index[t.to_class]] += float(t.area_ha)
    shown = [row[:] for row in areas]
    for i, kept in enumerate(persistence_ha or ()):
        shown[i][i] += float(kept)  # a full cross-tabulation: the area that kept its class on the diagonal
    head = "".join(f"<th>{_e(name)}</th>" for name in class_names)
    rows = [f'<table><tr><th class="name">from \\ to</th>{head}<th>Total</th></tr>']
    for name, row in zip(class_names, shown, strict=True):
        cells = "".join(f"<td>{format_hectares(v) if v else ''}</td>" for v in row)
        rows.append(f'<tr><th class="name">{_e(name)}</th>{cells}<td>{format_hectares(sum(row))}</td></tr>')
    totals = "".join(f"<td>{format_hectares(sum(r[j] for r in areas))}</td>" for j in range(n))
    rows.append(f'<tr><th class="name">Total changed</th>{totals}<td>{format_hectares(sum(map(sum, areas)))}</td>'
                "</tr>")
    if unchanged is not None:
        rows.append(f'<tr><th class="name">No change</th>{"<td></td>" * n}'
                    f'<td>{format_hectares(float(unchanged.area_ha))}</td></tr>')
    rows.append("</table>")
    return "\n".join(rows)


def _table(changed: Sequence[TransitionRow], colors: Mapping[int, str], changed_ha: float) -> str:
    rows = ['<h2>Transitions</h2><table><tr><th>Code</th><th class="name">Transition</th><th>Pixels</th>'
            "<th>Area (ha)</th><th>Share of change</th></tr>"]
    ranked = sorted(changed, key=lambda t: -float(t.area_ha))
    for t in ranked[:MAX_TABLE_ROWS]:
        color = colors.get(int(t.value), "#888888")
        share = 100 * float(t.area_ha) / changed_ha if changed_ha else 0.0
        rows.append(f'<tr><td>{int(t.value)}</td><td class="name"><span class="swatch" '
                    f'style="background:{_e(color)}"></span>{_e(t.label)}</td><td>{int(t.pixels):,}</td>'
                    f'<td>{format_hectares(float(t.area_ha))}</td><td>{share:.1f} %</td></tr>')
    rest = ranked[MAX_TABLE_ROWS:]
    if rest:
        area = sum(float(t.area_ha) for t in rest)
        rows.append(f'<tr><td></td><td class="name">{len(rest):,} other transitions</td>'
                    f"<td>{sum(int(t.pixels) for t in rest):,}</td><td>{format_hectares(area)}</td>"
                    f"<td>{100 * area / changed_ha if changed_ha else 0.0:.1f} %</td></tr>")
    rows.append("</table>")
    return "\n".join(rows)
