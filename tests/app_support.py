"""Shared material for the web page tests: a tiny checkpoint and in-memory images.

The checkpoint is a freshly initialised ResNet-18 at 64 px (its scores mean
nothing; the tests check the plumbing, not the medicine). The DICOM carries
patient identifiers on purpose, so the tests can prove none of them reaches
the page or the report.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np

IMAGE_SIZE = 64
TAU = 0.37  # unusual on purpose: the page must show the checkpoint's own tau

# Identifiers planted in the test DICOM; none may appear in any output.
PATIENT_NAME = "Quixote^Dulcinea"
PATIENT_ID = "PID-7734911"
BIRTH_DATE = "19610412"
ACCESSION = "ACC-55512"
IDENTIFIERS = (PATIENT_NAME, "Quixote", "Dulcinea", PATIENT_ID, BIRTH_DATE, ACCESSION)
MANUFACTURER = "ACME Imaging"

from paths import MIAS_ARCHIVE  # noqa: E402,F401  (re-exported for the page tests)


def make_tiny_checkpoint(directory: Path, *, extra: dict | None = None) -> Path:
    """Saves a random-init resnet18 checkpoint at 64 px with tau = TAU (``extra``: more metadata)."""
    import jax

    from mammojax import models
    from mammojax.checkpoint import make_meta, save_checkpoint
    from mammojax.config import base_config

    config = base_config()
    config.data.image_size = IMAGE_SIZE
    model = models.create_model(config.model.name)
    variables = models.init_variables(model, jax.random.key(config.seed), IMAGE_SIZE)
    return save_checkpoint(directory, variables, make_meta(config, tau=TAU, extra=extra))


def phantom_pixels(height: int = 120, width: int = 96, seed: int = 0) -> np.ndarray:
    """A breast-like bright half-disc on black, with noise: float in [0, 1]."""
    rng = np.random.default_rng([seed, 8])
    rows, cols = np.mgrid[0:height, 0:width]
    inside = ((rows - height / 2) / (height / 2)) ** 2 + (cols / (0.8 * width)) ** 2 < 1.0
    pixels = inside * (0.55 + 0.1 * rng.standard_normal((height, width)))
    return np.clip(pixels, 0.0, 1.0)


def png_bytes(height: int = 120, width: int = 96, seed: int = 0) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    image = np.round(phantom_pixels(height, width, seed) * 255).astype(np.uint8)
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def dicom_bytes(*, laterality: str = "L", view: str = "CC", intent: str = "FOR PRESENTATION") -> bytes:
    """A 12-bit MONOCHROME2 mammogram DICOM with patient identifiers, in memory (``intent``: its
    PresentationIntentType)."""
    from pydicom.uid import generate_uid

    from mammojax.data.synthetic import write_dicom

    pixels = np.round(phantom_pixels(110, 90, seed=1) * 4095).astype(np.uint16)
    buffer = io.BytesIO()
    write_dicom(buffer, pixels, bits_stored=12, SOPInstanceUID=generate_uid(entropy_srcs=["mammojax-app-test"]),
                PatientName=PATIENT_NAME, PatientID=PATIENT_ID, PatientBirthDate=BIRTH_DATE,
                AccessionNumber=ACCESSION, Manufacturer=MANUFACTURER, ImageLaterality=laterality,
                ViewPosition=view, PresentationIntentType=intent)
    return buffer.getvalue()


def extract_mias_image(directory: Path, name: str | None = None) -> Path | None:
    """A MIAS PGM (``name``, or the first in the archive) into ``directory``; None if absent."""
    if not MIAS_ARCHIVE.is_file():
        return None
    with tarfile.open(MIAS_ARCHIVE) as archive:
        for member in archive:  # streamed: stops at the first match
            base = Path(member.name).name
            if member.isfile() and base.endswith(".pgm") and name in (None, base):
                target = Path(directory) / base
                target.write_bytes(archive.extractfile(member).read())
                return target
    return None
