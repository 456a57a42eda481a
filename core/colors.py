"""Colour science for the legends: distinct, readable colours for every transition.

A from-to map with dozens of transitions must still be readable: each transition takes
a shade of the colour of the class it became (the map reads as "what it became"),
and shades are chosen to look as different as possible, measured in CIE L*a*b*
(a space where equal distances look equally different). See docs/legends.md.
"""

from __future__ import annotations

import colorsys
from collections.abc import Collection
from functools import lru_cache

import numpy as np

RGB = tuple[int, int, int]

#: Up to this many classes every transition colour is chosen to stand apart from all others;
#: beyond it (comparisons of detailed legends) each transition takes a plain shade of its "to" class.
MAX_SPREAD_CLASSES = 16

#: Change-probability ramp (ColorBrewer YlOrRd): pale where unlikely, deep red where certain.
PROBABILITY_RAMP: tuple[tuple[float, RGB], ...] = (
    (0.0, (255, 255, 178)),
    (0.25, (254, 204, 92)),
    (0.5, (253, 141, 60)),
    (0.75, (240, 59, 32)),
    (1.0, (189, 0, 38)),
)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) of 0..255 sRGB colours, to measure how different two colours look."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], -1)


def _hls_to_rgb(h: float, lightness: float, s: float) -> RGB:
    r, g, b = colorsys.hls_to_rgb(h % 1.0, lightness, s)
    return round(r * 255), round(g * 255), round(b * 255)


#: Colours at most this saturated (HLS) are greys: their shades also take faint tints, since
#: lightness alone leaves room for only a few greys that the eye tells apart.
GREY_SATURATION = 0.25

#: Weight of the pull towards the class colour (CIE L*a*b* distance) against the spread of the shades.
_PULL = 0.1
#: How much more a shade's distance to the other transitions' colours counts than its distance
#: to the shades of its own column: transitions into one class sit side by side in a legend and
#: must be told apart there, while colours of other classes' columns have a hue of their own.
_OTHER_COLUMNS = 2.0


def _shades(color: RGB) -> list[RGB]:
    """Candidate colours of the same family: small hue shifts, any lightness, less saturation; greys get tints."""
    h, _, s = colorsys.rgb_to_hls(*(c / 255.0 for c in color))
    lightness = [0.12 + 0.025 * i for i in range(31)]
    out = {_hls_to_rgb(h + dh, level, s * sf) for dh in (-0.04, 0.0, 0.04) for sf in (1.0, 0.75, 0.5)
           for level in lightness}
    if s < GREY_SATURATION:  # warm, cool, greenish ... greys: still grey, easier to tell apart
        out |= {_hls_to_rgb(hue / 8, level, tint) for hue in range(8) for tint in (0.1, 0.2) for level in lightness}
    return sorted(out)


def _pastel(color: RGB) -> RGB:
    """Washed-out class colour for "changed, class unresolved": visibly a weaker statement."""
    r, g, b = (round(0.4 * c + 0.6 * 235) for c in color)
    return r, g, b


@lru_cache(maxsize=16)
def transition_colors(colors: tuple[RGB, ...]) -> dict[tuple[int, int], RGB]:
    """Colour of every (from, to) pair of 0-based class indices.

    Each transition takes a shade of its "to" class colour, so the map reads as "what
    it became"; the shades of one column differ by the "from" class. Shades are
    picked greedily, each the candidate farthest (in CIE L*a*b*) from the colours of
    its own column (the others' shades and the column's pastel), the colours of the
    other columns counting only at half that distance, with a mild pull towards the
    class colour so a column stays one family. The transitions into one class, which
    a legend lists together, are thus the ones kept most clearly apart (a grey class
    also gets faintly tinted greys: five plain greys between black and white lay
    10 units apart, barely told apart). Within a column the shades are then ordered
    dark to light by "from" class, so the legend reads regularly. Same-class pairs get
    a pastel of the class colour.
    """
    n = len(colors)
    result: dict[tuple[int, int], RGB] = {(t, t): _pastel(colors[t]) for t in range(n)}
    for t in range(n):
        candidates = np.array(_shades(colors[t]))
        cand_lab = srgb_to_lab(candidates)
        pull = np.linalg.norm(cand_lab - srgb_to_lab(np.array(colors[t])), axis=-1)
        others = srgb_to_lab(np.array([c for pair, c in result.items() if pair != (t, t)]))
        to_others = np.linalg.norm(cand_lab[:, None, :] - others[None, :, :], axis=-1).min(axis=1)
        picks: list[RGB] = []
        for _ in range(n - 1):
            column = srgb_to_lab(np.array([result[(t, t)], *picks]))
            to_column = np.linalg.norm(cand_lab[:, None, :] - column[None, :, :], axis=-1).min(axis=1)
            spread = np.minimum(to_column, _OTHER_COLUMNS * to_others)
            best = candidates[int(np.argmax(spread - _PULL * pull))]
            picks.append((int(best[0]), int(best[1]), int(best[2])))
        picks.sort(key=lambda c: colorsys.rgb_to_hls(*(x / 255.0 for x in c))[1])
        sources = [f for f in range(n) if f != t]
        result.update({(f, t): c for f, c in zip(sources, picks, strict=True)})
    return result


def shade_of(color: RGB, index: int, count: int) -> RGB:
    """The ``index``-th of ``count`` shades of ``color``, dark to light: cheap colours for many transitions."""
    h, _, s = colorsys.rgb_to_hls(*(c / 255.0 for c in color))
    lightness = 0.25 + 0.5 * (index + 0.5) / max(1, count)
    return _hls_to_rgb(h, lightness, s)


# --- colours for classes that have none ----------------------------------------------------------

#: Golden-angle hue steps, lightness and saturation levels of the generated class colours, in the
#: order they are used: every hue at the first lightness pair, then at the next, and so on.
_GENERATED_LEVELS = ((0.45, 0.65), (0.62, 0.65), (0.32, 0.75), (0.75, 0.55), (0.55, 0.9), (0.25, 0.5))
_GOLDEN = 0.618033988749895
#: Hues tried per level before the next: about as many as 8-bit rounding keeps apart.
_HUES_PER_LEVEL = 720
#: An odd multiplier: ``index * _SCATTER mod 2**24`` visits every 24-bit colour once, spread out.
_SCATTER = 0x9E3779


def generated_color(index: int) -> RGB:
    """The ``index``-th generated class colour (golden-angle hues, then other lightness levels).

    Colours of nearby indices differ clearly; far apart indices may repeat a colour after
    8-bit rounding, which :func:`distinct_colors` skips.
    """
    level = _GENERATED_LEVELS[(index // 2) // _HUES_PER_LEVEL * 2 % len(_GENERATED_LEVELS) + index % 2]
    hue = (index * _GOLDEN) % 1.0
    return _hls_to_rgb(hue, *level)


def distinct_colors(count: int, taken: Collection[RGB] = ()) -> list[RGB]:
    """``count`` colours, different from each other and from ``taken``, for classes without a colour.

    The golden-angle sequence of :func:`generated_color` gives readable colours first;
    it holds only a few thousand distinct 8-bit colours, so when it runs dry (a map of
    thousands of codes) the rest are taken from a scattered walk over every 24-bit
    colour, which visits each once. So this always ends, after at most
    ``count + len(taken)`` colours from each source, for any ``count`` up to 2**24 less
    the colours taken.

    Raises:
        ValueError: for more colours than exist besides ``taken``.
    """
    used = set(taken)
    if count < 0 or count + len(used) > 1 << 24:
        raise ValueError(f"cannot choose {count} distinct colours besides {len(used)} taken ones")
    chosen: list[RGB] = []
    limit = len(_GENERATED_LEVELS) * _HUES_PER_LEVEL
    index = 0
    while len(chosen) < count and index < limit:
        color = generated_color(index)
        index += 1
        if color not in used:
            used.add(color)
            chosen.append(color)
    step = 0
    while len(chosen) < count:
        value = (step * _SCATTER) & 0xFFFFFF
        step += 1
        color = (value >> 16, (value >> 8) & 0xFF, value & 0xFF)
        if color not in used:
            used.add(color)
            chosen.append(color)
    return chosen
