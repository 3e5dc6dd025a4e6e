"""VinDr-Mammo metadata as the download lays it out, for the adapter tests."""

from __future__ import annotations

from pathlib import Path

# The columns of breast-level_annotations.csv; finding_annotations.csv adds the finding columns.
BREAST_LEVEL_HEADER = ("study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,"
                       "breast_density,split")


def write_breast_level(folder: Path, images, *, series: str, height: int, width: int) -> str:
    """Writes ``breast-level_annotations.csv`` for ``(study, image, laterality, view, birads)`` rows
    (density C, training split); returns the header, which finding_annotations.csv starts with."""
    lines = [BREAST_LEVEL_HEADER] + [f"{s},{series},{i},{lat},{v},{height},{width},{b},DENSITY C,training"
                                     for s, i, lat, v, b in images]
    (folder / "breast-level_annotations.csv").write_text("\n".join(lines) + "\n")
    return BREAST_LEVEL_HEADER
