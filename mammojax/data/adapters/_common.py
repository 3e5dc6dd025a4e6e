"""Pieces shared by the dataset adapters: the adapter description, CSV reading
with one-line errors, and small label helpers."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from mammojax.data.record_types import LESION_KINDS, DatasetRecords, Task
from mammojax.errors import MammojaxError


@dataclass(frozen=True)
class Adapter:
    """How :func:`mammojax.data.records.load_dataset` calls one dataset.

    ``load(data_dir, *, task, **opts)`` gets a task already checked against
    ``tasks`` and only options named in ``options``. ``tasks`` says what each
    task's labels mean (:class:`~mammojax.data.records.Task`: class names and
    a one-line description); ``"default"`` is always one of them.
    """

    load: Callable[..., DatasetRecords]
    tasks: dict[str, Task]
    options: tuple[str, ...] = ()
    description: str = ""
    data_dir_optional: bool = False  # synthetic: writes into a cache dir
    task_errors: dict[str, str] = field(default_factory=dict)  # task -> why it cannot exist
    # The patient of a file from its name alone, when the name follows this
    # dataset's layout (None otherwise): predict groups loose files with it.
    patient_of_file: Callable[[Path], str | None] | None = None
    # Its records give lesions a centre and a radius (circles, boxes): what explanation-guided
    # training (train.cam_loss_weight) draws its targets from.
    lesion_circles: bool = False


def read_csv_rows(path: Path, *, delimiter: str = ",",
                  required: Iterable[str] = ()) -> Iterator[tuple[int, dict[str, str]]]:
    """Yields ``(line_number, row)`` with stripped keys and cells.

    Public CSVs carry stray spaces and newlines inside cells (CBIS-DDSM ROI
    paths end in ``\\n``); stripping everything once here keeps the adapters
    simple. Missing ``required`` columns raise ``MammojaxError`` naming the file.
    """
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as err:
        raise MammojaxError(f"{path}: cannot open: {err.strerror}") from None
    with handle:
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise MammojaxError(f"{path}: empty file, expected a header row") from None
        header = [h.strip() for h in header]
        missing = [c for c in required if c not in header]
        if missing:
            raise MammojaxError(
                f"{path}: missing column(s) {', '.join(missing)}; found: {', '.join(header)}")
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # blank line
            cells = [cell.strip() for cell in row]
            cells += [""] * (len(header) - len(cells))
            yield reader.line_num, dict(zip(header, cells))


def first_existing(candidates: Iterable[Path]) -> Path | None:
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def birads_category(value: str) -> int | None:
    """``"4a"``, ``"BI-RADS 4"``, ``" 5 "`` -> 4, 4, 5; blank/unknown -> None."""
    text = value.strip().upper().replace("BI-RADS", "").replace("BIRADS", "").strip()
    return int(text[0]) if text[:1].isdigit() else None


BIRADS3_CHOICES = ("exclude", "negative")
# The label of the BI-RADS datasets (INbreast, VinDr): a radiologist's suspicion, not a biopsy.
BIRADS_TASK = Task("suspicious (BI-RADS 4-6) vs negative (BI-RADS 1-2), a proxy without biopsy; "
                   "BI-RADS 3 per the birads3 option", ("negative", "suspicious"))


def birads_label(category: int | None, birads3: str) -> int | None:
    """BI-RADS proxy label: 4-6 positive, 1-2 negative, 3 per ``birads3``.

    Returns ``None`` for images to exclude (BI-RADS 0/unknown, or 3 when
    ``birads3="exclude"``).
    """
    if birads3 not in BIRADS3_CHOICES:
        raise MammojaxError(f"birads3 must be one of {', '.join(BIRADS3_CHOICES)}, not {birads3!r}")
    if category is None or category == 0:
        return None
    if category >= 4:
        return 1
    if category == 3:
        return 0 if birads3 == "negative" else None
    return 0


def label_from_birads(value: str, birads3: str) -> tuple[int | None, str | None]:
    """``(label, None)`` for a usable BI-RADS cell, else ``(None, exclusion reason)``."""
    category = birads_category(value)
    label = birads_label(category, birads3)
    if label is not None:
        return label, None
    if category == 3:
        return None, "BI-RADS 3 excluded (birads3='exclude')"
    return None, f"no usable BI-RADS ({value!r})"


def find_file(data_dir: Path, names: Iterable[str], *, max_depth: int = 2) -> Path | None:
    """The first file called one of ``names`` in ``data_dir`` or a few levels below it.

    Downloads unpack into a versioned folder (``INbreast Release 1.0/``); users
    should not have to point at the exact one.
    """
    names = tuple(names)
    found = find_files(data_dir, names, max_depth=max_depth)
    return next((found[name] for name in names if name in found), None)


def find_files(data_dir: Path, names: Iterable[str], *, max_depth: int = 2) -> dict[str, Path]:
    """``name -> path`` of each of ``names`` found in ``data_dir`` or below (nearest level first)."""
    wanted = set(names)
    found: dict[str, Path] = {}
    level = [data_dir]
    for _ in range(max_depth + 1):
        for folder in level:
            for name in sorted(wanted - set(found)):
                if (folder / name).is_file():
                    found[name] = folder / name
        if len(found) == len(wanted):
            break
        level = sorted(p for folder in level for p in subdirs(folder))
    return found


# Finding names -> LESION_KINDS, first match wins. INbreast's "Spiculated
# Region" (and its Portuguese spelling "Espiculated Region") outlines the
# spicules of a spiculated mass, so it counts as mass; "Assymetry" is its
# spelling of asymmetry; "Cluster" is a calcification cluster.
_KIND_NEEDLES = (
    ("calc", "calcification"), ("cluster", "calcification"),
    ("distortion", "distortion"),
    ("asym", "asymmetry"), ("assym", "asymmetry"),
    ("mass", "mass"), ("spiculated", "mass"), ("nodule", "mass"),
)


def lesion_kind(*names: str) -> str:
    """The kind in :data:`~mammojax.data.records.LESION_KINDS` of one finding.

    Several names (VinDr's ``['Suspicious Calcification', 'Mass']``) give the
    first of LESION_KINDS among theirs: a mass with calcifications is a mass.
    """
    kinds = set()
    for name in names:
        text = str(name).strip().lower()
        kinds.add(next((kind for needle, kind in _KIND_NEEDLES if needle in text), "other"))
    return next((kind for kind in LESION_KINDS if kind in kinds), "other")


# Mammographic views -> the standard view of their family. The lateral and
# oblique projections (ML, LM, LMO, SIO, AT = axillary tail) show the breast
# from the side with the pectoral muscle, as MLO does; XCCL, XCCM and FB
# (from below) are craniocaudal variants. Record.view holds the family and
# extra "acquired_view" the view as acquired when it differs, so nothing is
# lost and every view is known.
VIEW_FAMILIES = {"CC": "CC", "XCCL": "CC", "XCCM": "CC", "FB": "CC",
                 "MLO": "MLO", "ML": "MLO", "LM": "MLO", "LMO": "MLO", "SIO": "MLO", "AT": "MLO"}
LATERALITIES = {"L": "L", "LEFT": "L", "R": "R", "RIGHT": "R"}


def view_fields(value: str | None) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """``(Record.view, extra pairs)`` of an acquired view: ``"LM"`` -> ``("MLO", (("acquired_view", "LM"),))``.

    An unknown view gives ``None`` and keeps the value as ``acquired_view``.
    """
    acquired = str(value or "").strip().upper()
    family = VIEW_FAMILIES.get(acquired)
    extra = (("acquired_view", acquired),) if acquired and acquired != family else ()
    return family, extra


def subdirs(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
