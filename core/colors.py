"""Colour science for the legends: distinct, readable colours for every transition.

A from-to map with dozens of transitions must still be readable: each transition takes
a shade of the colour of the class it became (the map reads as "what it became"),
and shades are chosen to look as different as possible, measured in CIE L*a*b*
(a space where equal distances look equally different). See docs/legends.md.
"""

from __future__ import annotations

import colorsys
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


def _shades(color: RGB) -> list[RGB]:
    """Candidate colours of the same family: small hue shifts, any lightness, less saturation."""
    h, _, s = colorsys.rgb_to_hls(*(c / 255.0 for c in color))
    out = {
        _hls_to_rgb(h + dh, 0.15 + 0.025 * i, s * sf)
        for dh in (-0.03, 0.0, 0.03)
        for sf in (1.0, 0.75, 0.5)
        for i in range(29)
    }
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
    picked greedily to be as far as possible (in CIE L*a*b*) from every colour already
    used, with a mild pull towards the class colour so a column stays one family;
    within a column they are then ordered dark to light by "from" class, so the
    legend reads regularly. Same-class pairs get a pastel of the class colour.
    """
    n = len(colors)
    result: dict[tuple[int, int], RGB] = {(t, t): _pastel(colors[t]) for t in range(n)}
    for t in range(n):
        candidates = np.array(_shades(colors[t]))
        cand_lab = srgb_to_lab(candidates)
        pull = np.linalg.norm(cand_lab - srgb_to_lab(np.array(colors[t])), axis=-1)
        picks: list[RGB] = []
        for _ in range(n - 1):
            used = srgb_to_lab(np.array([*result.values(), *picks]))
            spread = np.linalg.norm(cand_lab[:, None, :] - used[None, :, :], axis=-1).min(axis=1)
            best = candidates[int(np.argmax(spread - 0.2 * pull))]
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
