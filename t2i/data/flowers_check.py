"""The flowers checker: reads petal colour, centre colour, petal count and size from a flowers-world image.

Procedural (numpy / scipy.ndimage, no learned model), so it judges generators independently of the
text encoder trained on the same world. Steps, on an RGB image of any size:

1. background = foliage-green (hue 75..170 degrees, saturation > 0.2) or dark (value < 0.2) pixels;
   no petal colour is either, while a green or black flower centre is (it is found by geometry);
2. the flower = the largest group of the rest, pixels closer than 5% of the side grouped together
   (thin petals around a background-coloured centre touch nothing). With two flowers (the world
   draws the second one half as large, 12% of the side away) that is the larger one, the one the
   caption describes;
3. its centre = the patch's centroid (petals are spread evenly around it), its radius R = the farthest
   patch pixel from there;
4. centre colour = median colour of the pixels within half the centre disc's radius of the centre,
   named by the nearest (RGB) centre colour; petal colour = median colour of the patch's inner pixels
   (eroded by one, so anti-aliased edges blended with the background do not count) between 0.45 R
   and 0.8 R, named by the nearest petal colour;
5. petal count = the strongest Fourier harmonic k in 4..8 of the patch's angular profile (occupancy
   around the centre, averaged over radii 0.5 R .. 0.85 R, where petals are apart). n petals put
   their energy at k = n and its multiples: a 4-petalled flower's 8th harmonic is |cos(4 pi duty)|
   of its 4th, weaker for every petal width drawn; and no count's harmonics land on another in 4..8
   except 4 -> 8;
6. size = "large" when R is past the midpoint of the two sizes' radii.

`judge` returns None values when there is no flower-coloured patch.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .flowers import CENTRE_COLOURS, CENTRE_FRACTION, PETAL_COLOURS, PETAL_COUNTS, RADIUS, Scene

ATTRIBUTES = ("colour", "centre", "petals", "size")  # what `judge` reads, in report order
GROUP_MARGIN = 0.05  # pixels this close (fraction of the side, each way) belong to one flower
MIN_AREA = 0.01  # a patch smaller than this fraction of the image is no flower
NONE = {a: None for a in ATTRIBUTES}

_PETAL_NAMES, _PETAL_RGB = tuple(PETAL_COLOURS), np.array(list(PETAL_COLOURS.values()), np.float32)
_CENTRE_NAMES, _CENTRE_RGB = tuple(CENTRE_COLOURS), np.array(list(CENTRE_COLOURS.values()), np.float32)
_SIZE_THRESHOLD = (RADIUS["small"] + RADIUS["large"]) / 2


def _nearest(rgb: np.ndarray, names: tuple[str, ...], palette: np.ndarray) -> str:
    return names[int(((palette - rgb) ** 2).sum(1).argmin())]


def background_mask(rgb: np.ndarray) -> np.ndarray:
    """bool (h, w): foliage-green or dark pixels of a float RGB image in [0, 255]."""
    mx, mn = rgb.max(2), rgb.min(2)
    value = mx / 255
    sat = (mx - mn) / np.maximum(mx, 1e-6)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    # Hue in degrees (the standard hexcone formula); only its green band matters here.
    delta = np.maximum(mx - mn, 1e-6)
    hue = np.where(mx == r, ((g - b) / delta) % 6, np.where(mx == g, (b - r) / delta + 2, (r - g) / delta + 4)) * 60
    green = (hue >= 75) & (hue <= 170) & (sat > 0.2)
    return green | (value < 0.2)


def flower_mask(rgb: np.ndarray) -> np.ndarray | None:
    """bool (h, w): the flower-coloured pixels of the largest flower, or None when there is none.

    Pixels are grouped with a margin of GROUP_MARGIN of the side: thin petals around a green or
    black centre (background-coloured) are apart by up to 0.22 of the radius where they leave the
    centre disc (5.5 px at 64x64), and the world keeps two flowers 0.12 of the side (7.7 px) apart."""
    fg = ~background_mask(rgb)
    k = max(1, round(GROUP_MARGIN * max(fg.shape)))
    disc = np.hypot(*np.mgrid[-k:k + 1, -k:k + 1]) <= k
    labels, n = ndimage.label(ndimage.binary_dilation(fg, structure=disc) if fg.any() else fg)
    if n == 0:
        return None
    counts = np.bincount(labels[fg], minlength=n + 1)  # flower-coloured pixels per group
    counts[0] = 0
    mask = fg & (labels == counts.argmax())
    return mask if mask.sum() >= MIN_AREA * mask.size else None


def petal_count(mask: np.ndarray, cy: float, cx: float, radius: float) -> int:
    """The petal count in PETAL_COUNTS whose harmonic dominates the angular profile (step 5)."""
    angles = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    radii = np.linspace(0.5, 0.85, 8) * radius
    ys = cy + radii[:, None] * np.sin(angles)[None]
    xs = cx + radii[:, None] * np.cos(angles)[None]
    profile = ndimage.map_coordinates(mask.astype(np.float32), [ys, xs], order=1, mode="constant").mean(0)
    power = np.abs(np.fft.rfft(profile - profile.mean()))
    return max(PETAL_COUNTS, key=lambda k: power[k])


def judge(image) -> dict:
    """{"colour", "centre", "petals", "size"} of the (largest) flower in an RGB image: a uint8 HWC
    array, a (3, h, w) array or a PIL image. All None when no flower is found."""
    rgb = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if rgb.ndim == 3 and rgb.shape[0] == 3 and rgb.shape[2] != 3:
        rgb = rgb.transpose(1, 2, 0)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"a flowers image is (h, w, 3) or (3, h, w) RGB, got shape {rgb.shape}")
    rgb = rgb.astype(np.float32)
    mask = flower_mask(rgb)
    if mask is None:
        return dict(NONE)
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    yy, xx = np.mgrid[:h, :w]
    dist = np.hypot(yy - cy, xx - cx)
    radius = float(dist[mask].max()) + 0.5  # the farthest pixel's centre is half a pixel inside the tip
    centre_px = dist <= max(0.5 * CENTRE_FRACTION * radius, 1.0)
    centre = _nearest(np.median(rgb[centre_px], 0), _CENTRE_NAMES, _CENTRE_RGB)
    ring = (dist >= 0.45 * radius) & (dist <= 0.8 * radius)
    inner = ndimage.binary_erosion(mask) & ring
    petals_px = inner if inner.sum() >= 8 else mask & ring  # thin petals at small sizes erode away
    colour = _nearest(np.median(rgb[petals_px], 0), _PETAL_NAMES, _PETAL_RGB)
    size = "large" if radius / max(h, w) > _SIZE_THRESHOLD else "small"
    return {"colour": colour, "centre": centre, "petals": petal_count(mask, cy, cx, radius), "size": size}


def score(image, scene: Scene) -> dict[str, bool]:
    """Per attribute, whether the image shows the scene's flower's value (as judged by `judge`)."""
    judged = judge(image)
    truth = scene.attributes()
    return {a: judged[a] == truth[a] for a in ATTRIBUTES}
