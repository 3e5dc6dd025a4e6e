"""The built-in phantom dataset: written once per (seed, count, size), then reused.

Patients have four images (CC and MLO of both breasts); half the patients are
positive, with a lesion in every one of their images, so half the images and
half the patients are positive and patient-level metrics stay defined. The
files go to ``data_dir`` (or ``<cache>/synthetic`` when it is empty) as
``phantoms-seed<S>-n<N>-<P>px/`` holding 16-bit PNG images, 8-bit PNG lesion
masks, ``manifest.csv`` (readable by the ``csv`` adapter) and
``manifest.json`` (with lesions). The folder is built under a temporary name
and renamed, so it either exists complete or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from mammojax.data.adapters._common import Adapter
from mammojax.data.adapters.csv_manifest import write_manifest
from mammojax.data.record_types import DatasetRecords, Exclusion, Lesion, Record, Task
from mammojax.data.synthetic import EXPLICIT_VR_LITTLE_ENDIAN, film_pixels, make_phantom, write_dicom
from mammojax.errors import MammojaxError
from mammojax.runtime import default_cache_dir

TASKS = {"default": Task("phantom with a synthetic lesion vs without", ("normal", "lesion"))}
VIEWS_PER_PATIENT = (("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))
# Purpose ids for np.random.default_rng([seed, purpose, ...]) (docs/ARCHITECTURE.md).
PURPOSE_PATIENT_LABELS = 101
PURPOSE_PHANTOM = 102
FORMAT_VERSION = 1  # bump when the generator changes, so old sets are not reused


def load(data_dir: Path | None, *, task: str = "default", count: int = 256, size: int = 256,
         seed: int = 0) -> DatasetRecords:
    if count < 2 or size < 32:
        raise MammojaxError(f"synthetic dataset needs count >= 2 and size >= 32 (got {count}, {size})")
    root = data_dir if data_dir is not None else default_cache_dir() / "synthetic"
    folder = ensure_phantoms(root, count=count, size=size, seed=seed)
    return _read_manifest(folder)


def ensure_phantoms(root: Path, *, count: int, size: int, seed: int) -> Path:
    """The folder holding this phantom set, writing it first if it is not there."""
    folder = root / f"phantoms-seed{seed}-n{count}-{size}px"
    if _complete(folder, count=count, size=size, seed=seed):
        return folder
    try:
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=root))
    except OSError as err:
        raise MammojaxError(f"{root}: cannot write the synthetic dataset: {err.strerror}") from None
    try:
        write_phantoms(scratch, count=count, size=size, seed=seed)
        if _complete(folder, count=count, size=size, seed=seed):
            return folder  # a job started beside this one wrote it first; others may be reading it
        if folder.exists():  # an older or broken copy
            shutil.rmtree(folder)
        try:
            os.replace(scratch, folder)
        except OSError:
            if not _complete(folder, count=count, size=size, seed=seed):
                raise  # not a concurrent writer finishing first
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def _complete(folder: Path, *, count: int, size: int, seed: int) -> bool:
    try:
        meta = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("params") == _params(count, size, seed)


def _params(count: int, size: int, seed: int) -> dict:
    return {"count": count, "size": size, "seed": seed, "version": FORMAT_VERSION}


def patient_labels(num_patients: int, seed: int) -> np.ndarray:
    """0/1 per patient, exactly half positive (rounded down), seeded."""
    labels = np.zeros(num_patients, dtype=np.int64)
    order = np.random.default_rng([seed, PURPOSE_PATIENT_LABELS]).permutation(num_patients)
    labels[order[: num_patients // 2]] = 1
    return labels


def write_phantoms(folder: Path, *, count: int, size: int, seed: int) -> None:
    """Renders and writes ``count`` phantoms plus both manifests into ``folder``."""
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    entries = []
    for index, rng, entry in phantom_plan(count, seed):
        label, laterality, view = entry["label"], entry["laterality"], entry["view"]
        image, mask, lesions = make_phantom(rng, size=size, positive=bool(label),
                                            laterality=laterality, view=view)
        name = f"phantom_{index:05d}"
        pixels = np.round(image * 65535.0).astype(np.uint16)
        Image.fromarray(pixels).save(folder / "images" / f"{name}.png", compress_level=1)
        mask_name = None
        if lesions:
            mask_name = f"masks/{name}_mask.png"
            Image.fromarray(mask.astype(np.uint8) * 255).save(folder / mask_name, compress_level=1)
        entries.append({
            **entry, "path": f"images/{name}.png",
            "lesions": [{"kind": l.kind, "row": l.row, "col": l.col, "radius": l.radius,
                         "mask_path": mask_name, "severity": l.severity} for l in lesions],
        })
    write_manifest(folder, entries)
    # Written last: its presence marks a complete set.
    (folder / "manifest.json").write_text(json.dumps(
        {"params": _params(count, size, seed), "images": entries}, indent=1))


def write_dicom_films(folder: Path, *, count: int, shape: tuple[int, int] = (3328, 2560), seed: int = 0,
                      transfer_syntax: str | None = None, bits_stored: int = 14) -> Path:
    """Writes ``count`` full-size phantom mammograms as DICOM files plus ``manifest.csv``; returns the CSV.

    The films of a scale test (3328x2560, 14-bit, MONOCHROME2, MG, with
    ImageLaterality and ViewPosition), in ``films/film_NNNNN.dcm``; patients,
    labels and views follow the phantom set above. Film ``i`` depends only on
    ``(seed, i)``, so a bigger set starts with the smaller one's films.
    ``transfer_syntax``: explicit VR little endian (default) or a compressed
    syntax such as JPEG 2000 lossless (``synthetic.JPEG_2000_LOSSLESS``).
    """
    (folder / "films").mkdir(parents=True, exist_ok=True)
    entries = []
    for index, rng, entry in phantom_plan(count, seed):
        stored = film_pixels(rng, shape, bits_stored=bits_stored, positive=bool(entry["label"]),
                             laterality=entry["laterality"], view=entry["view"])
        entry["path"] = f"films/film_{index:05d}.dcm"
        write_dicom(folder / entry["path"], stored, bits_stored=bits_stored,
                    transfer_syntax=transfer_syntax or EXPLICIT_VR_LITTLE_ENDIAN,
                    PatientID=entry["patient_id"], ImageLaterality=entry["laterality"], ViewPosition=entry["view"],
                    PresentationIntentType="FOR PRESENTATION", BodyPartExamined="BREAST",
                    PixelSpacing=[0.07, 0.07])
        entries.append(entry)
    return write_manifest(folder, entries)


def phantom_plan(count: int, seed: int):
    """``(index, rng, {"label", "patient_id", "laterality", "view"})`` for each of ``count`` images.

    One generator per image: image i does not depend on ``count``.
    """
    labels = patient_labels(-(-count // len(VIEWS_PER_PATIENT)), seed)
    for index in range(count):
        patient, slot = divmod(index, len(VIEWS_PER_PATIENT))
        laterality, view = VIEWS_PER_PATIENT[slot]
        yield index, np.random.default_rng([seed, PURPOSE_PHANTOM, index]), {
            "label": int(labels[patient]), "patient_id": f"synth{patient:04d}",
            "laterality": laterality, "view": view}


def _read_manifest(folder: Path) -> DatasetRecords:
    meta = json.loads((folder / "manifest.json").read_text())
    records, excluded = [], []
    for e in meta["images"]:
        path = folder / e["path"]
        if not path.is_file():
            excluded.append(Exclusion(str(path), "phantom file missing (delete the folder to rebuild)"))
            continue
        lesions = tuple(Lesion(kind=l["kind"], row=l["row"], col=l["col"], radius=l["radius"],
                               mask_path=str(folder / l["mask_path"]) if l["mask_path"] else None,
                               severity=l["severity"]) for l in e["lesions"])
        records.append(Record(path=str(path), label=e["label"], patient_id=e["patient_id"],
                              laterality=e["laterality"], view=e["view"], lesions=lesions))
    return DatasetRecords(records, excluded)


ADAPTER = Adapter(load=load, tasks=TASKS, options=("count", "size", "seed"), data_dir_optional=True,
                  lesion_circles=True, description="seeded phantoms written on first use (the quickstart dataset)")
