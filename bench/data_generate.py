"""Generate the issue-23 bench folder: N JPEGs, 224x224x3, in 10 class folders.

  python bench/data_generate.py /work/tmp/jpegs24k --images 24000
  python bench/data_generate.py /work/tmp/jpegs240k --images 240000

Each image is a smooth colour gradient whose hue, and a filled shape whose kind and place,
depend on the class, under mild noise: a small net can learn it, and the JPEGs come out near
the size of photos of that resolution at quality 90 (noise-only images would be 3-4x larger
and unrepresentative). Seeded: the same command writes the same files. Resumable: files that
exist are kept, so an interrupted run continues. Never commit the output.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE = 224
CLASSES = 10


def image(label: int, rng: np.random.Generator) -> Image.Image:
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * x + np.sin(angle) * y  # (H, W) in about [-1.4, 1.4]
    base = np.array([np.cos(label * 0.63), np.cos(label * 0.63 + 2.1), np.cos(label * 0.63 + 4.2)]) * 80 + 128
    pixels = base[None, None, :] + 50 * ramp[..., None] + rng.normal(0, 12, (SIZE, SIZE, 3))  # (H, W, 3)
    picture = Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(picture)
    cx, cy, r = rng.uniform(50, 174), rng.uniform(50, 174), rng.uniform(20, 45)
    fill = tuple(int(v) for v in rng.integers(0, 256, 3))
    box = (cx - r, cy - r, cx + r, cy + r)
    [draw.ellipse, draw.rectangle, lambda b, fill: draw.regular_polygon((cx, cy, r), 3 + label // 3, fill=fill)][
        label % 3](box, fill=fill)
    return picture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--images", type=int, default=24_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started, written = time.perf_counter(), 0
    for label in range(CLASSES):
        (args.folder / f"class{label}").mkdir(parents=True, exist_ok=True)
    for i in range(args.images):
        label = i % CLASSES
        path = args.folder / f"class{label}" / f"img{i:07d}.jpg"
        if path.exists():
            continue
        picture = image(label, np.random.default_rng([args.seed, i]))
        tmp = path.with_suffix(".part")
        picture.save(tmp, "JPEG", quality=90)
        tmp.rename(path)
        written += 1
        if written % 2000 == 0:
            print(f"{i + 1:,}/{args.images:,} ({written / (time.perf_counter() - started):.0f} images/s)", flush=True)
    size = sum(p.stat().st_size for p in args.folder.rglob("*.jpg"))
    print(f"{args.folder}: {args.images:,} JPEGs, {size / 1e6:,.0f} MB on disk, wrote {written:,} in "
          f"{time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
