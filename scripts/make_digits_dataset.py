"""Writes the scikit-learn digits TEST split as an ImageNet-layout directory of PNG files, the
data set the loadgen client and the tests use with the `digits-cnn` model.

Usage:
    python scripts/make_digits_dataset.py [--out models/data/digits-val]

Layout (like ImageNet's validation set as MLPerf uses it):
  OUT/digits_0000.png ... OUT/digits_0449.png   8x8 8-bit grayscale PNG (mode "L"), one per image
  OUT/val_map.txt                                "<file> <label>" per line, label = digit 0..9
                                                 (0-based), in sample order (QSL index = line)

Pixels: pixel_u8 = round(v * 255 / 16) for sklearn's raw values v in 0..16 (ink bright,
background 0). To reproduce the model input a client decodes the PNG as 8-bit gray and computes
x = pixel_u8 / 255.0 as FP32, shape [1,8,8] per sample ([N,1,8,8] batched); no resize, no crop,
no mean subtraction.

Only the test split of make_digits_model.py (450 images, never seen in training) is written, so
accuracy measured on it is honest. The directory is ~100 KB and committed to git; the output is
byte-for-byte deterministic.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_digits_model import digits_split  # noqa: E402  (the shared, fixed train/test split)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="models/data/digits-val", help="output directory")
    args = ap.parse_args()

    _, _, images, labels = digits_split()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (img, label) in enumerate(zip(images, labels)):
        name = f"digits_{i:04d}.png"
        Image.fromarray(img).save(out / name, optimize=True)
        lines.append(f"{name} {int(label)}\n")
    (out / "val_map.txt").write_text("".join(lines))

    # Round trip: what a client decodes is exactly what the model was evaluated on.
    back = np.stack([np.asarray(Image.open(out / ln.split()[0]).convert("L")) for ln in lines])
    if not np.array_equal(back, images):
        raise SystemExit("PNG round trip changed pixel values")
    counts = np.bincount(labels, minlength=10)
    print(f"wrote {len(lines)} images and val_map.txt to {out} (per class: {counts.tolist()})")


if __name__ == "__main__":
    main()
