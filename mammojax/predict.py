"""``mammojax predict`` as a library: inputs -> streamed rows -> CSV or JSONL.

Inputs are image files, folders (searched recursively) or CSV manifests with a
``path`` column (optional ``patient_id`` and ``label`` columns). Rows are
written as soon as each batch is scored, so a long run can be watched and a
crash keeps what was done.

Rows (the same fields in CSV and JSONL: :data:`FIELDS`):

* ``kind=image``: ``path, patient_id``, ``probability`` (of the checkpoint's
  positive class, e.g. "abnormal"), ``decision``: the class called at the
  checkpoint's tau, by name (the positive class when ``probability >= tau``,
  else the other one, e.g. "normal"). There is no ground truth here, so no
  column is called ``label``; ``eval``'s ``scores.csv`` has ``truth`` beside
  the same ``probability`` and ``decision``. ``warning``: why the score should
  not be trusted, empty for a normal image
  (:func:`mammojax.data.screening.image_flags`: a FOR PROCESSING DICOM, raw
  detector data, is scored but flagged).
* ``kind=error``: ``path, patient_id, error``: the file could not be read; the
  run goes on with the next file.
* ``kind=patient``, written after every image: one per patient,
  ``probability`` = the maximum over that patient's scored images (a lesion
  seen on any view flags the woman), ``decision`` at ``tau``, ``n_images``;
  ``path`` is empty; ``warning`` counts her flagged images.
* ``kind=breast`` and ``kind=exam``, after the patient rows, for DICOM
  inputs only: images grouped into exams by Study Instance UID and into
  breasts by laterality, both read from the headers
  (:mod:`mammojax.clinic.exams`). ``exam`` is ``exam-1``, ``exam-2``... (in
  the order of this run, never the UID); image rows carry their ``exam`` so
  the groups can be followed. Per exam: one row per breast (``laterality``
  L/R), then the exam's row, each at its own stored operating point.

Every scored row names its level's ``tau`` and, for groups, the ``rule``
(``max`` or ``mean``: the checkpoint's ``patient_aggregate``) that made its
score from the images' lesion margins. ``laterality`` of an image row is
from its header (DICOM) or empty.

Patient ids, first that applies (``eval`` groups a dataset's films the same way):

1. a manifest's ``patient_id`` column;
2. a known dataset's file naming, by that dataset's adapter
   (:func:`mammojax.data.records.patient_from_file_name`): MIAS films
   ``mdb001`` and ``mdb002`` are one woman, ``mias001``; INbreast names carry
   an anonymised patient token;
3. the file-name stem with trailing laterality/view tokens removed, so
   ``P001_L_CC.dcm`` and ``P001_R_MLO.dcm`` share ``P001``; a name without
   such tokens is its own patient.

DICOM headers are never used to find *patients*: they hold real names and
ids, and nothing identifying read from them may reach the output. Exams are
found from the Study Instance UID, which stays in memory.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import IO, Iterable, Iterator

from mammojax.clinic.exams import ExamLabels, level_results
from mammojax.data.records import patient_from_file_name
from mammojax.data.screening import image_flags
from mammojax.errors import MammojaxError
from mammojax.evaluation.operating_points import group_probabilities

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".pgm", ".dcm", ".dicom"}
FIELDS = ("kind", "path", "patient_id", "exam", "laterality", "probability", "decision", "tau", "rule",
          "n_images", "warning", "error")
# Laterality/view tokens dropped from the end of a file stem to find the patient.
_VIEW_TOKENS = {"l", "r", "left", "right", "cc", "mlo", "ml", "lm", "xccl", "at", "spot",
                "lcc", "rcc", "lmlo", "rmlo"}
_SEPARATORS = re.compile(r"[_\-. ]+")


@dataclasses.dataclass(frozen=True)
class InputItem:
    path: str
    patient_id: str


def patient_from_path(path: str | os.PathLike) -> str:
    """A patient id from a file name (see the module docstring); never from DICOM."""
    known = patient_from_file_name(path)
    if known:
        return known
    stem = Path(path).name
    suffix = Path(stem).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        stem = stem[: -len(suffix)]
    tokens = [t for t in _SEPARATORS.split(stem) if t]
    while len(tokens) > 1 and tokens[-1].lower() in _VIEW_TOKENS:
        tokens.pop()
    return "_".join(tokens) if tokens else stem


def _is_dicom_by_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def _scan_folder(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            suffix = path.suffix.lower()
            if suffix in IMAGE_SUFFIXES or (suffix == "" and _is_dicom_by_magic(path)):
                found.append(path)
    return found


def _read_manifest(manifest: Path) -> list[InputItem]:
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip().lower() for c in (reader.fieldnames or [])]
            if "path" not in columns:
                found = ", ".join(columns) or "none"
                raise MammojaxError(f"{manifest}: manifest has no 'path' column (columns: {found})")
            rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise MammojaxError(f"{manifest}: cannot read manifest ({err})") from None
    items = []
    for row in rows:
        if not row.get("path"):
            continue
        path = Path(row["path"])
        if not path.is_absolute():
            path = manifest.parent / path  # relative to the manifest, not the cwd
        patient = row.get("patient_id") or patient_from_path(path)
        items.append(InputItem(str(path), patient))
    return items


def collect_inputs(inputs: Iterable[str | os.PathLike]) -> list[InputItem]:
    """Expands files, folders and ``.csv`` manifests into a list of images.

    A missing input is a user error; a listed file that turns out unreadable
    is not (it becomes an error row when scored).
    """
    items: list[InputItem] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            items.extend(InputItem(str(p), patient_from_path(p)) for p in _scan_folder(path))
        elif path.suffix.lower() == ".csv" and path.is_file():
            items.extend(_read_manifest(path))
        elif path.exists():
            items.append(InputItem(str(path), patient_from_path(path)))
        else:
            raise MammojaxError(f"{path}: input not found")
    return items


class RowWriter:
    """Writes rows as CSV (header first) or JSON Lines, flushing each batch."""

    def __init__(self, stream: IO, fmt: str):
        self.stream, self.fmt = stream, fmt
        if fmt == "csv":
            self._csv = csv.DictWriter(stream, fieldnames=FIELDS, extrasaction="ignore")
            self._csv.writeheader()

    def write(self, row: dict) -> None:
        if self.fmt == "csv":
            self._csv.writerow({k: ("" if row.get(k) is None else row[k]) for k in FIELDS})
        else:
            self.stream.write(json.dumps({k: row.get(k) for k in FIELDS}) + "\n")

    def flush(self) -> None:
        self.stream.flush()


def output_format(out: str | None, as_json: bool) -> str:
    if as_json or (out and out.lower().endswith((".jsonl", ".json"))):
        return "jsonl"
    return "csv"


def check_output(out: str | None, *, overwrite: bool) -> None:
    """Refuses an existing ``out`` (without ``overwrite``) or a directory."""
    if not out or out == "-":
        return
    path = Path(out)
    if path.is_dir():
        raise MammojaxError(f"{path}: is a directory; pass a file name to --out")
    if path.exists() and not overwrite:
        raise MammojaxError(f"{path}: already exists; pass --overwrite to replace it")


def open_output(out: str | None, *, overwrite: bool) -> IO:
    """The output stream: stdout, or a new file (existing ones need ``overwrite``)."""
    if not out or out == "-":
        return sys.stdout
    path = Path(out)
    if path.is_dir():
        raise MammojaxError(f"{path}: is a directory; pass a file name to --out")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "w" if overwrite else "x", newline="", encoding="utf-8")
    except FileExistsError:
        raise MammojaxError(f"{path}: already exists; pass --overwrite to replace it") from None
    except OSError as err:
        raise MammojaxError(f"{path}: cannot write ({err.strerror or err})") from None


@dataclasses.dataclass
class PredictSummary:
    scored: int = 0
    failed: int = 0
    flagged: dict = dataclasses.field(default_factory=dict)  # warning -> scored images with it
    patients: int = 0
    seconds: float = 0.0
    skipped: list = dataclasses.field(default_factory=list)  # (path, reason) of each error row
    exams: int = 0
    breasts: int = 0
    images: list = dataclasses.field(default_factory=list)  # the image rows (for --dicom-out)
    levels: list = dataclasses.field(default_factory=list)  # the breast and exam rows


def predict_rows(scorer, items: list[InputItem], *, aggregate: str = "max") -> Iterator[dict]:
    """Image and error rows in input order, one patient row per patient, then the exam rows.

    Probabilities and decisions come from ``scorer`` (:class:`mammojax.scoring.Scorer`);
    a patient's score aggregates her images' lesion margins (``max`` by default, the
    checkpoint's ``patient_aggregate``) and is read at the checkpoint's patient-level
    operating point (:mod:`mammojax.evaluation.operating_points`), as ``eval`` reads it.
    DICOM images are also grouped into breasts and exams (:mod:`mammojax.clinic.exams`).
    Image rows carry ``format`` (not written) so ``--dicom-out`` knows which are DICOM.
    """
    scored_patients: list[str] = []
    margins: list[float] = []
    flagged: dict[str, int] = {}
    labels = ExamLabels()
    in_exams: list[tuple[float, str, str | None, str, str]] = []  # margin, exam, laterality, patient, path
    for item, result in zip(items, scorer.score_paths([i.path for i in items])):
        if not result.ok:
            yield {"kind": "error", "path": result.path, "patient_id": item.patient_id, "error": result.error}
            continue
        scored_patients.append(item.patient_id)
        margin = float(result.logits[1] - result.logits[0])
        margins.append(margin)
        meta = result.meta
        flags = image_flags(meta) if meta is not None else ()
        if flags:
            flagged[item.patient_id] = flagged.get(item.patient_id, 0) + 1
        fmt = getattr(meta, "format", None)
        laterality = getattr(meta, "laterality", None) if fmt == "dicom" else None
        exam = labels.label_of(result.path) if fmt == "dicom" else None
        if exam:
            in_exams.append((margin, exam, laterality, item.patient_id, result.path))
        yield {"kind": "image", "path": result.path, "patient_id": item.patient_id, "exam": exam,
               "laterality": laterality, "probability": round(result.probability, 6),
               "decision": scorer.decision(result.probability), "tau": round(scorer.tau, 6),
               "warning": "; ".join(flags) or None,
               "flags": flags, "format": fmt}  # flags, format: not written (flags are counted)
    if not margins:
        return
    point = scorer.operating_points["patient"]
    grouped = group_probabilities(margins, scored_patients, point, aggregate)
    for patient, score, size in zip(grouped.keys, grouped.scores, grouped.sizes):
        count = flagged.get(patient, 0)
        yield {"kind": "patient", "path": "", "patient_id": patient, "probability": round(float(score), 6),
               "decision": scorer.decision(float(score), "patient"), "tau": round(point.tau, 6),
               "rule": aggregate, "n_images": int(size),
               "warning": f"{count} of her {int(size)} images flagged" if count else None}
    if in_exams:
        exam_margins, exams, sides, patients, paths = zip(*in_exams)
        for result in level_results(scorer, exam_margins, exams, sides, aggregate):
            owners = {patients[i] for i in result.members}
            row = result.row(owners.pop() if len(owners) == 1 else None)
            yield {**row, "members": [paths[i] for i in result.members]}  # members: not written


def run_predict(scorer, items: list[InputItem], stream: IO, fmt: str, *, aggregate: str = "max",
                progress=None) -> PredictSummary:
    """Scores ``items`` and writes every row to ``stream``; returns the counts.

    ``progress`` is a bar from :func:`mammojax.progress.progress_bar` (or None).
    """
    writer = RowWriter(stream, fmt)
    summary = PredictSummary()
    start = time.perf_counter()
    for row in predict_rows(scorer, items, aggregate=aggregate):
        writer.write(row)
        if row["kind"] == "patient":
            summary.patients += 1
            continue
        if row["kind"] in ("breast", "exam"):
            summary.exams += row["kind"] == "exam"
            summary.breasts += row["kind"] == "breast"
            summary.levels.append(row)
            continue
        if row["kind"] == "image":
            summary.scored += 1
            summary.images.append(row)
            for reason in row["flags"]:
                summary.flagged[reason] = summary.flagged.get(reason, 0) + 1
        else:
            summary.failed += 1
            summary.skipped.append((row["path"], row["error"]))
        if progress is not None:
            progress.update(1)
        if (summary.scored + summary.failed) % scorer.batch_size == 0:
            writer.flush()
    writer.flush()
    summary.seconds = time.perf_counter() - start
    return summary
