"""A small line chart drawn with Pillow (no plotting library needed): throughput against batch size."""

from __future__ import annotations

from PIL import Image, ImageDraw

W, H, MARGIN = 640, 400, 60


def scaling_plot(points: list[tuple[int, float]], title: str) -> Image.Image:
    """points: (jobs in batch, job-steps/s); x on a log2 scale, as batch sizes double."""
    import math

    image = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(image)
    xs = [math.log2(b) for b, _ in points]
    top = max(r for _, r in points) * 1.15
    span = max(xs) - min(xs) or 1.0

    def at(x: float, y: float) -> tuple[float, float]:
        return (MARGIN + (x - min(xs)) / span * (W - 2 * MARGIN), H - MARGIN - y / top * (H - 2 * MARGIN))

    draw.line([at(min(xs), 0), at(max(xs), 0)], fill="black")
    draw.line([at(min(xs), 0), at(min(xs), top)], fill="black")
    for i in range(5):  # y grid and labels
        y = top * i / 4
        draw.line([at(min(xs), y), at(max(xs), y)], fill=(225, 225, 225))
        draw.text((8, at(0, y)[1] - 6), f"{y:.3g}", fill="black")
    coords = [at(x, r) for x, (_, r) in zip(xs, points)]
    draw.line(coords, fill=(200, 40, 40), width=3)
    for (b, r), c in zip(points, coords):
        draw.ellipse([c[0] - 4, c[1] - 4, c[0] + 4, c[1] + 4], fill=(200, 40, 40))
        draw.text((c[0] - 8, H - MARGIN + 8), str(b), fill="black")
    draw.text((MARGIN, 12), title, fill="black")
    draw.text((W // 2 - 60, H - 24), "jobs in batch (log scale)", fill="black")
    draw.text((8, 30), "job-steps/s", fill="black")
    return image
