"""JSON out of mammojax: the one place numbers are made JSON-safe.

JSON has no NaN or infinity: an undefined metric (an AUC on a one-class
split, the CAM mass of an empty map) is written as ``null``, which reads as
"undefined" in every language. NumPy scalars and arrays become plain Python
numbers and lists; tuples become lists; mapping keys become strings.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


def json_safe(value):
    """``value`` with NaN/inf as None and NumPy types as Python types, recursively."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # NumPy/JAX scalars and arrays
        return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def dumps(value, **options) -> str:
    """``json.dumps`` of :func:`json_safe` (never writes NaN)."""
    return json.dumps(json_safe(value), allow_nan=False, **options)


def write_json(path: str | os.PathLike, value, *, indent: int | None = 2, atomic: bool = False) -> Path:
    """Writes ``value`` as JSON (sorted keys, trailing newline); returns the path.

    ``atomic``: written to a hidden sibling (``.NAME.tmp-PID``) and renamed over
    ``path``, so a reader, or a run killed midway, sees the old file or the new
    one, never half of one.
    """
    path = Path(path)
    text = dumps(value, indent=indent, sort_keys=True) + "\n"
    if not atomic:
        path.write_text(text)
        return path
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
