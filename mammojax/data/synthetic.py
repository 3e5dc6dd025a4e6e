"""Seeded mammogram-like phantoms with lesion masks.

The built-in dataset of the quickstart and the tests: no download, no patient
data, a known answer. A phantom is a breast-shaped half-ellipse attached to
the chest wall (left edge for a left breast, mirrored for a right one) with
smooth fibroglandular texture, a pectoral-muscle triangle on MLO views, and,
for positives, a dense round or spiculated mass (sometimes with a
microcalcification cluster) whose exact outline is returned as a mask.

The lesion is meant to be a genuine but learnable signal: it is denser and
sharper-edged than the texture, and its diameter is a configurable fraction of
the image width, so a small ResNet at 64-128 px learns it in a few CPU epochs
while a positive cannot be told from a negative by global brightness alone.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from mammojax.data.record_types import Lesion

LATERALITIES = ("L", "R")
VIEWS = ("CC", "MLO")


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    rows.setflags(write=False)
    cols.setflags(write=False)
    return rows, cols


@functools.lru_cache(maxsize=16)
def _lowpass(size: int, sigma_px: float) -> np.ndarray:
    """Fourier-domain Gaussian blur of width ``sigma_px`` pixels."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    return np.exp(-2.0 * (math.pi * sigma_px) ** 2 * (fy ** 2 + fx ** 2)).astype(np.float32)


def smooth_noise(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian-filtered white noise (filtering in Fourier space)."""
    noise = rng.standard_normal((size, size), dtype=np.float32)
    field = np.fft.irfft2(np.fft.rfft2(noise) * _lowpass(size, sigma_px), s=(size, size))
    return ((field - field.mean()) / (field.std() + 1e-8)).astype(np.float32)


def make_phantom(rng: np.random.Generator, *, size: int = 256, positive: bool, laterality: str = "L",
                 view: str = "CC", lesion_size: tuple[float, float] = (0.06, 0.12),
                 calcification_prob: float = 0.3) -> tuple[np.ndarray, np.ndarray, list[Lesion]]:
    """One phantom: ``(image float32 (size, size) in [0, 1], mask bool, lesions)``.

    ``lesion_size`` is the range of mass diameters as a fraction of the image
    width. Lesions are in pixel coordinates with a top-left origin; the mask
    is the union of every lesion's extent (mass outline with spicules, and
    the disc around a calcification cluster). Negatives have an empty mask.
    """
    if laterality not in LATERALITIES:
        raise ValueError(f"laterality must be L or R, not {laterality!r}")
    if view not in VIEWS:
        raise ValueError(f"view must be CC or MLO, not {view!r}")
    rows, cols = _grid(size)

    # Breast: half-ellipse on the chest wall (column 0); ``thickness`` is the compressed
    # thickness, which makes tissue fade towards the skin line.
    centre_row = size * rng.uniform(0.45, 0.55) + (size * 0.05 if view == "MLO" else 0.0)
    half_height = size * rng.uniform(0.36, 0.46)
    depth = size * rng.uniform(0.55, 0.8)
    radial = ((rows - centre_row) / half_height) ** 2 + (cols / depth) ** 2
    breast = radial < 1.0
    thickness = np.sqrt(np.clip(1.0 - radial, 0.0, 1.0))

    density = rng.uniform(0.08, 0.18)  # fibroglandular amplitude: fatty .. dense
    texture = (0.7 * smooth_noise(rng, size, size * 0.035)
               + 0.3 * smooth_noise(rng, size, size * 0.012))
    image = (0.22 + 0.2 * np.sqrt(thickness) + density * texture * thickness) * breast

    pectoral = np.zeros_like(breast)
    if view == "MLO":
        # Bright muscle triangle in the upper chest-wall corner.
        width, height = size * rng.uniform(0.18, 0.32), size * rng.uniform(0.35, 0.6)
        pectoral = cols < width * (1.0 - rows / height)
        image = np.where(pectoral, 0.62 + 0.03 * texture, image)

    mask = np.zeros((size, size), dtype=bool)
    lesions: list[Lesion] = []
    if positive:
        allowed = breast & ~pectoral & (radial < 0.55)
        row, col = _pick_point(rng, allowed, rows, cols)
        mass, outline, radius = _mass(rng, rows, cols, row, col, size * rng.uniform(*lesion_size) / 2)
        image = image + mass
        mask |= outline
        lesions.append(Lesion("mass", float(row), float(col), float(radius), severity="malignant"))
        if rng.uniform() < calcification_prob:
            row, col = _pick_point(rng, allowed & ~outline, rows, cols)
            specks, extent, radius = _calcifications(rng, rows, cols, row, col, size)
            image = image + specks
            mask |= extent
            lesions.append(Lesion("calcification", float(row), float(col), float(radius),
                                  severity="malignant"))

    body = breast | pectoral  # the background outside the body stays exactly black
    image = image + rng.normal(0.0, 0.008, size=(size, size)).astype(np.float32)
    image = np.clip(image * body, 0.0, 1.0).astype(np.float32)
    mask &= body  # a spicule can poke past the skin line: it is not visible there
    if laterality == "R":
        image, mask = image[:, ::-1].copy(), mask[:, ::-1].copy()
        lesions = [Lesion(l.kind, l.row, size - 1 - l.col, l.radius, severity=l.severity) for l in lesions]
    return image, mask, lesions


def _pick_point(rng, allowed: np.ndarray, rows, cols) -> tuple[int, int]:
    candidates = np.flatnonzero(allowed)
    index = candidates[rng.integers(len(candidates))]
    return int(rows.flat[index]), int(cols.flat[index])


def _mass(rng, rows, cols, row, col, radius):
    """A dense mass: round (slightly lobulated) or spiculated, returned as
    ``(added intensity, outline mask, enclosing radius)``.

    Computed in a window around the centre only: rays reach at most ~2.2x the
    core radius, so nothing outside ``3 * radius`` can change.
    """
    size = rows.shape[0]
    reach = int(math.ceil(3 * radius)) + 1
    top, bottom = max(0, row - reach), min(size, row + reach + 1)
    left, right = max(0, col - reach), min(size, col + reach + 1)
    dy, dx = rows[top:bottom, left:right] - row, cols[top:bottom, left:right] - col
    dist = np.hypot(dy, dx)
    angle = np.arctan2(dy, dx)
    boundary = radius * (1.0 + 0.12 * np.sin(rng.integers(2, 5) * angle + rng.uniform(0, 2 * math.pi)))
    if rng.uniform() < 0.5:  # spiculated: thin rays reaching out to ~2x the core radius
        for ray in rng.uniform(-math.pi, math.pi, size=rng.integers(6, 12)):
            offset = (angle - ray + math.pi) % (2 * math.pi) - math.pi
            boundary = boundary + radius * rng.uniform(0.6, 1.1) * np.exp(-(offset / 0.07) ** 2)
    inside = dist <= boundary
    contrast = rng.uniform(0.28, 0.4)
    intensity = np.zeros(rows.shape, dtype=np.float32)
    outline = np.zeros(rows.shape, dtype=bool)
    profile = np.clip(1.0 - dist / np.maximum(boundary, 1e-3), 0.0, 1.0) ** 0.35
    intensity[top:bottom, left:right] = contrast * profile
    outline[top:bottom, left:right] = inside
    enclosing = float(dist[inside].max()) + 0.5  # the centre pixel is always inside
    return intensity, outline, enclosing


def _calcifications(rng, rows, cols, row, col, size):
    """A cluster of bright specks within a small disc: ``(intensity, disc, radius)``."""
    cluster_radius = max(3.0, size * rng.uniform(0.025, 0.045))
    specks = np.zeros(rows.shape, dtype=np.float32)
    speck_radius = max(0.8, size * 0.004)
    for _ in range(rng.integers(5, 12)):
        r = cluster_radius * math.sqrt(rng.uniform())
        theta = rng.uniform(0, 2 * math.pi)
        sr, sc = row + r * math.sin(theta), col + r * math.cos(theta)
        specks += 0.5 * np.exp(-((rows - sr) ** 2 + (cols - sc) ** 2) / (2 * speck_radius ** 2))
    disc = np.hypot(rows - row, cols - col) <= cluster_radius + speck_radius
    return specks, disc, cluster_radius + speck_radius


# --- full-size films and DICOM files --------------------------------------------------

# The uncompressed syntax every reader handles; compressed ones are written with
# pydicom's ``Dataset.compress`` (JPEG 2000 lossless: pylibjpeg-openjpeg).
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
MAMMOGRAPHY_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
# Detector noise added at full resolution, as a fraction of the stored range:
# without it an upsampled phantom is far smoother than a real film and JPEG 2000
# compresses it several times better than real mammograms.
FILM_NOISE = 0.006


def film_pixels(rng: np.random.Generator, shape: tuple[int, int] = (3328, 2560), *, bits_stored: int = 14,
                positive: bool, laterality: str = "L", view: str = "CC") -> np.ndarray:
    """A full-size phantom film as stored DICOM values: ``uint16`` of ``shape`` in ``[0, 2**bits_stored)``.

    The phantom is rendered at a quarter of the film's height (:func:`make_phantom`
    makes squares), cut to the film's aspect on the chest-wall side, upsampled
    bilinearly and given per-pixel detector noise inside the body; the
    background stays exactly 0, as on a real film.
    """
    from PIL import Image

    height, width = shape
    side = max(32, height // 4)
    image, _, _ = make_phantom(rng, size=side, positive=positive, laterality=laterality, view=view)
    cut = max(1, min(side, round(side * width / height)))
    image = image[:, :cut] if laterality == "L" else image[:, side - cut:]
    film = np.asarray(Image.fromarray(image, mode="F").resize((width, height), Image.BILINEAR))
    body = film > 0
    film = film + rng.normal(0.0, FILM_NOISE, size=shape).astype(np.float32) * body
    top = (1 << bits_stored) - 1
    return np.round(np.clip(film, 0.0, 1.0) * top).astype(np.uint16)


def write_dicom(target, stored: np.ndarray, *, bits_stored: int = 16, signed: bool = False,
                photometric: str = "MONOCHROME2", transfer_syntax: str = EXPLICIT_VR_LITTLE_ENDIAN,
                file_meta: bool = True, **elements):
    """Writes ``stored`` (2-D, or frames x rows x cols) as a DICOM file; returns ``target``.

    ``target`` is a path or a binary buffer. ``elements`` are header keywords
    (``ImageLaterality="L"``, ``WindowCenter=...``); the SOP class defaults to
    digital mammography for presentation, the modality to MG. Values are
    stored in 16 bits (two's complement when ``signed``); ``BitsStored`` and
    ``HighBit`` say how many of them count. A compressed ``transfer_syntax``
    is encoded by pydicom's ``Dataset.compress``; ``file_meta=False`` writes
    the bare implicit-VR dataset with no preamble (an old ACR-NEMA-like file).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, generate_uid

    stored = np.asarray(stored)
    ds = Dataset()
    ds.SOPClassUID = elements.pop("SOPClassUID", MAMMOGRAPHY_FOR_PRESENTATION)
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = elements.pop("Modality", "MG")
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if stored.ndim == 3 and stored.shape[0] > 1:
        ds.NumberOfFrames = stored.shape[0]
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.PixelData = stored.astype(np.int16 if signed else np.uint16).tobytes()
    if not file_meta:
        ds.save_as(target, implicit_vr=True, little_endian=True)
        return target
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = UID(EXPLICIT_VR_LITTLE_ENDIAN)
    if transfer_syntax != EXPLICIT_VR_LITTLE_ENDIAN:
        ds.compress(UID(transfer_syntax))
    ds.save_as(target, enforce_file_format=True)
    return target
