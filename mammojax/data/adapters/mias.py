"""mini-MIAS: 1024x1024 8-bit PGM films listed in ``Info.txt``.

``data_dir`` is the unpacked folder (``Info.txt`` may sit one or two levels
down, e.g. ``all-mias/``), the distributed ``.tar.gz``, or a folder holding
only that archive; archives are unpacked once into the cache directory.

Facts used here (shared/docs/DATASETS.md, and Info.txt's own notes):

* Info.txt rows have 3 fields (``mdb003 D NORM``), 4 (no coordinates), 7, or
  a ``*NOTE 3*`` token instead of coordinates; an image can have several rows.
* Coordinates have a bottom-left origin: ``row = H - 1 - y``, ``col = x``.
* Films come in pairs per woman: even numbers are left breasts, odd numbers
  right ones, so ``mdb(2k-1)`` and ``mdb(2k)`` are one patient, ``(n+1)//2``.
* All films are mediolateral-oblique views.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mammojax.data.adapters import _archive
from mammojax.data.adapters._common import Adapter
from mammojax.data.record_types import DatasetRecords, Exclusion, Lesion, Record, Task
from mammojax.errors import MammojaxError

_ABNORMAL = Task("abnormal (any finding, benign or malignant) vs normal", ("normal", "abnormal"))
TASKS = {"default": _ABNORMAL, "abnormal": _ABNORMAL,
         "malignant": Task("malignant vs non-malignant (benign findings and normal films)",
                           ("non-malignant", "malignant"))}
DEFAULT_SIZE = 1024  # every mini-MIAS film is 1024x1024; read from the header when possible

# Abnormality classes of Info.txt -> lesion kinds used across adapters.
CLASS_KINDS = {
    "CALC": "calcification",
    "CIRC": "mass",
    "SPIC": "mass",
    "MISC": "mass",
    "ARCH": "distortion",
    "ASYM": "asymmetry",
}
TISSUES = {"F": "fatty", "G": "fatty-glandular", "D": "dense-glandular"}
SEVERITIES = {"B": "benign", "M": "malignant"}
_REFNUM = re.compile(r"^mdb(\d{3})$")


@dataclass(frozen=True)
class InfoRow:
    """One parsed Info.txt row (an image may have several)."""

    refnum: str
    tissue: str
    abnormality: str  # CALC, CIRC, ..., NORM
    severity: str | None  # "B" | "M" | None for NORM
    x: float | None
    y: float | None
    radius: float | None


def parse_info(text: str, *, source: str = "Info.txt") -> list[InfoRow]:
    """Parses every ``mdbNNN ...`` row of Info.txt, ignoring the prose header.

    Rows are split on whitespace, so trailing spaces and tabs do not matter.
    Coordinates are kept only when all three of x, y, radius are numbers;
    ``*NOTE 3*`` (split as ``*NOTE`` ``3*``) or a missing triple means the
    finding has no location (widely spread calcifications).
    """
    rows = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or not _REFNUM.match(fields[0]):
            continue  # header, notes, separators, blank lines
        if len(fields) < 3:
            raise MammojaxError(f"{source}:{line_number}: expected at least 3 fields, got {line.strip()!r}")
        refnum, tissue, abnormality = fields[0], fields[1].upper(), fields[2].upper()
        if abnormality != "NORM" and abnormality not in CLASS_KINDS:
            raise MammojaxError(f"{source}:{line_number}: unknown abnormality class {fields[2]!r}")
        severity = fields[3].upper() if len(fields) > 3 else None
        if abnormality != "NORM" and severity not in SEVERITIES:
            raise MammojaxError(f"{source}:{line_number}: {refnum} {abnormality} needs severity B or M")
        x, y, radius = _coordinates(fields[4:7])
        rows.append(InfoRow(refnum, tissue, abnormality, severity, x, y, radius))
    return rows


def _coordinates(fields: list[str]) -> tuple[float | None, float | None, float | None]:
    try:
        x, y, radius = (float(f) for f in fields)
    except ValueError:
        return None, None, None  # "*NOTE 3*", or fewer than three numbers
    return x, y, radius


def load(data_dir: Path, *, task: str = "default", cache_dir: str | None = None) -> DatasetRecords:
    """Loads mini-MIAS; ``task`` "abnormal" (default: any finding vs NORM) or
    "malignant" (malignant vs benign + normal)."""
    root = _archive.resolve_folder(data_dir, marker="Info.txt", cache_dir=cache_dir, name="mias")
    info_path = root / "Info.txt"
    rows = parse_info(info_path.read_text(encoding="latin-1"), source=str(info_path))
    by_image: dict[str, list[InfoRow]] = {}
    for row in rows:
        by_image.setdefault(row.refnum, []).append(row)

    images = {p.stem: p for p in root.iterdir() if p.suffix.lower() == ".pgm" and _REFNUM.match(p.stem)}
    positive_if = "M" if task == "malignant" else ("B", "M")
    records, excluded = [], []
    for refnum, image_rows in sorted(by_image.items()):
        path = images.get(refnum)
        if path is None:
            excluded.append(Exclusion(str(root / f"{refnum}.pgm"), "listed in Info.txt but missing on disk"))
            continue
        records.append(_record(path, image_rows, positive_if))
    for refnum in sorted(set(images) - set(by_image)):
        excluded.append(Exclusion(str(images[refnum]), "no row in Info.txt"))
    return DatasetRecords(records, excluded)


def patient_of_file(path: Path) -> str | None:
    """The woman of a film named ``mdbNNN`` (any suffix): films ``2k-1`` and ``2k`` are one woman."""
    match = _REFNUM.match(Path(path).stem)
    return f"mias{(int(match.group(1)) + 1) // 2:03d}" if match else None


def _record(path: Path, rows: list[InfoRow], positive_if) -> Record:
    number = int(_REFNUM.match(path.stem).group(1))
    height = _pgm_height(path) or DEFAULT_SIZE
    findings = [r for r in rows if r.abnormality != "NORM"]
    severities = {r.severity for r in findings}
    severity = "malignant" if "M" in severities else ("benign" if findings else "normal")
    lesions = tuple(
        Lesion(kind=CLASS_KINDS[r.abnormality], row=height - 1 - r.y, col=r.x, radius=r.radius,
               severity=SEVERITIES[r.severity])
        for r in findings if r.x is not None)
    label = int(any(r.severity in positive_if for r in findings))
    classes = ",".join(dict.fromkeys(r.abnormality for r in rows))
    extra = (("tissue", TISSUES.get(rows[0].tissue, rows[0].tissue)),
             ("classes", classes), ("severity", severity))
    return Record(path=str(path), label=label, patient_id=patient_of_file(path),
                  laterality="L" if number % 2 == 0 else "R", view="MLO",
                  lesions=lesions, extra=extra)


def _pgm_height(path: Path) -> int | None:
    """Image height from a binary PGM header (``P5 W H MAX``, comments allowed)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(256)
    except OSError:
        return None
    tokens = []
    for line in head.split(b"\n"):
        tokens += line.split(b"#")[0].split()
        if len(tokens) >= 3:
            break
    if len(tokens) < 3 or tokens[0] not in (b"P2", b"P5"):
        return None
    try:
        return int(tokens[2])
    except ValueError:
        return None


ADAPTER = Adapter(load=load, tasks=TASKS, options=("cache_dir",), patient_of_file=patient_of_file,
                  lesion_circles=True, description="mini-MIAS (Info.txt + mdbNNN.pgm, folder or .tar.gz)")
