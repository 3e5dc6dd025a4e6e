"""Exams, not loose films: DICOM images grouped into exams and breasts, scored per level.

A screening exam is four views (left and right, CC and MLO) read together. For
DICOM inputs ``predict`` groups images into **exams** by Study Instance UID
and, within an exam, into **breasts** by laterality (Image Laterality, else
the series' Laterality: :func:`mammojax.data.dicom.dicom_laterality`). Both
come from the headers and are never shown: an exam is named ``exam-1``,
``exam-2``... in the order its first image was scored in this run, so a row
can be matched to its images (their ``exam`` column) without the UID, a
linkable identifier, reaching any output. An image of unknown laterality is
its own breast (:func:`mammojax.evaluation.aggregate.group_keys`), never
guessed into one.

Each level is read at its own operating point, fitted on validation scores of
that level and stored in the checkpoint (:mod:`mammojax.evaluation.operating_points`):
a breast at the ``breast`` point, an exam at the ``patient`` point (a woman's
screening decision is made on her exam: with one exam per woman, as in every
validation set here, the two groups are the same). A level's score is the
aggregate (the checkpoint's ``patient_aggregate``: ``max`` or ``mean``, named
in every row as ``rule``) of its images' lesion margins, through that level's
temperature, exactly as ``eval`` scores its breast and patient levels.

Non-DICOM inputs (and DICOMs without a Study Instance UID) carry no exam: they
are grouped by the dataset's own patient rule, as before (``patient`` rows).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator, Sequence

from mammojax.errors import ImageReadError
from mammojax.data.dicom import read_header
from mammojax.evaluation.aggregate import group_keys
from mammojax.evaluation.operating_points import group_probabilities

# The stored operating point each level is read at.
LEVEL_POINTS = {"breast": "breast", "exam": "patient"}


@dataclasses.dataclass(frozen=True)
class LevelResult:
    """One breast's or one exam's score; ``members`` index the images given to :func:`level_results`."""
    kind: str  # "breast" | "exam"
    exam: str  # "exam-1", ...: never the Study Instance UID
    laterality: str | None  # "L" | "R" for a breast, None for an exam or an unknown side
    probability: float
    decision: str
    tau: float
    rule: str  # "max" | "mean"
    members: tuple[int, ...]

    @property
    def n_images(self) -> int:
        return len(self.members)

    def row(self, patient_id: str | None = None) -> dict:
        """The ``predict`` row of this result."""
        return {"kind": self.kind, "path": "", "patient_id": patient_id or "", "exam": self.exam,
                "laterality": self.laterality or "", "probability": round(self.probability, 6),
                "decision": self.decision, "tau": round(self.tau, 6), "rule": self.rule,
                "n_images": self.n_images}


class ExamLabels:
    """Study Instance UID -> ``exam-1``, ``exam-2``... in first-seen order.

    The UIDs stay inside this object (in memory, for this run); only the labels leave.
    """
    def __init__(self):
        self._labels: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._labels)

    def label_of(self, path: str | os.PathLike) -> str | None:
        """The exam label of a DICOM file, or None (no Study Instance UID, unreadable header)."""

        try:
            header = read_header(path)
        except ImageReadError:
            return None
        uid = str(header.get("StudyInstanceUID", "") or "").strip()
        if not uid:
            return None
        return self._labels.setdefault(uid, f"exam-{len(self._labels) + 1}")


def level_results(scorer, margins: Sequence[float], exams: Sequence[str], lateralities: Sequence[str | None],
                  how: str = "max") -> Iterator[LevelResult]:
    """Per exam, in first-seen order: its breasts, then the exam itself.

    ``margins`` are the images' lesion margins ``z1 - z0`` (film logits, as
    ``predict`` has them), ``exams`` their exam labels, ``lateralities`` their
    sides; ``scorer`` gives the operating points, class names and decisions.
    """
    exams = list(exams)
    if not exams:
        return
    breast_keys = group_keys(exams, lateralities, "breast")
    breasts = group_probabilities(margins, breast_keys, scorer.operating_points[LEVEL_POINTS["breast"]], how)
    whole = group_probabilities(margins, exams, scorer.operating_points[LEVEL_POINTS["exam"]], how)
    by_key = dict(zip(breasts.keys, breasts.scores))
    for exam, exam_score in zip(whole.keys, whole.scores):
        for key in dict.fromkeys(k for k in breast_keys if k[0] == exam):
            side = key[1] if key[1] in ("L", "R") else None
            yield _result("breast", exam, side, float(by_key[key]), how, scorer,
                          tuple(i for i, k in enumerate(breast_keys) if k == key))
        yield _result("exam", exam, None, float(exam_score), how, scorer,
                      tuple(i for i, e in enumerate(exams) if e == exam))


def _result(kind: str, exam: str, side: str | None, probability: float, how: str, scorer,
            members: tuple[int, ...]) -> LevelResult:
    level = LEVEL_POINTS[kind]
    return LevelResult(kind=kind, exam=exam, laterality=side, probability=probability,
                       decision=scorer.decision(probability, level), tau=scorer.operating_points[level].tau,
                       rule=how, members=members)
