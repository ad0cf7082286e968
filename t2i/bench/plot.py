"""Small line charts drawn with Pillow (no plotting library needed): throughput against batch size
(the speed bench), and D and G losses per epoch (the GAN trainer)."""

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


def loss_plot(points: list[tuple[float, float]], title: str, size=(640, 400), margin: int = 60) -> Image.Image:
    """D (blue) and G (red) loss per epoch, each on its own scale (their ranges differ by orders: the
    L1 and feature matching terms weigh 50 and 100)."""
    w, h = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([margin, margin, w - margin, h - margin], outline="black")
    for index, colour, label in ((0, (40, 80, 200), "D"), (1, (200, 40, 40), "G")):
        ys = [p[index] for p in points]
        lo, hi = min(ys), max(ys)
        span = (hi - lo) or 1.0
        at = [(margin + (i / max(1, len(ys) - 1)) * (w - 2 * margin), h - margin - (y - lo) / span * (h - 2 * margin))
              for i, y in enumerate(ys)]
        draw.line(at if len(at) > 1 else at * 2, fill=colour, width=3)
        draw.text((8 if index == 0 else w - margin + 4, margin + 16 * index), f"{label} {hi:.3g}", fill=colour)
        draw.text((8 if index == 0 else w - margin + 4, h - margin - 12), f"{label} {lo:.3g}", fill=colour)
    draw.text((margin, 12), title, fill="black")
    draw.text((w // 2 - 20, h - 24), "epoch", fill="black")
    return image
