"""A mini-MIAS look-alike written by the tests: ``Info.txt`` and phantom ``mdbNNN.pgm`` films.

The real archive is research-use data that never enters the repository; this
folder has its layout (file names, Info.txt rows with a bottom-left origin),
so the adapter, ``predict`` and ``data summary`` treat it as MIAS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from app_support import phantom_pixels

# Two women: mdb001 (R, benign mass) + mdb002 (L, normal); mdb003 (R, normal) + mdb004 (L, malignant).
INFO = """\
MIAS look-alike for tests
mdb001 G CIRC B 60 70 12
mdb002 D NORM
mdb003 F NORM
mdb004 F SPIC M 40 50 10
"""


def write_mias_folder(folder: Path, size: int = 128) -> Path:
    """``folder`` holding Info.txt and four 8-bit PGM phantoms of ``size`` px; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Info.txt").write_text(INFO)
    for n in range(1, 5):
        pixels = np.round(phantom_pixels(size, size, seed=n) * 255).astype(np.uint8)
        if n % 2:  # odd films are right breasts: chest wall on the right
            pixels = pixels[:, ::-1]
        header = f"P5\n{size} {size}\n255\n".encode()
        (folder / f"mdb{n:03d}.pgm").write_bytes(header + np.ascontiguousarray(pixels).tobytes())
    return folder
