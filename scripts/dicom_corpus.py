"""Read every DICOM test file that pydicom and pydicom-data ship.

Each file must either load (float32, 2-D, finite, in [0, 1]) or fail with
``ImageReadError``; anything else (another exception, a wrong output, a hang)
is counted as "other" and listed. The corpus is the union of
``pydicom.data.get_testdata_files()`` and every file in the pydicom-data
package's ``data_store/data`` folder (compressed syntaxes, big-endian,
ACR-NEMA, multi-frame, palette colour, deliberately broken files...).

    python scripts/dicom_corpus.py            # counts, error reasons, files needing a decoder
    python scripts/dicom_corpus.py --list     # also one line per file

``tests/data/test_dicom_corpus.py`` runs the same check and asserts zero "other".
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzz_readers import classify  # noqa: E402

# Files in these folders are not images (Python modules, hashes, licences).
_SKIP_SUFFIXES = {".py", ".pyc", ".json", ".txt", ".md", ".cfg", ".toml"}


def corpus_files() -> list[Path]:
    """Every test file of pydicom and pydicom-data, each real path once, sorted."""
    from pydicom.data import get_testdata_files

    paths = {Path(p).resolve() for p in get_testdata_files()}
    try:
        import data_store  # the pydicom-data package

        root = Path(data_store.__file__).parent / "data"
        paths |= {p.resolve() for p in root.rglob("*") if p.is_file()}
    except ImportError:
        pass
    return sorted(p for p in paths if p.is_file() and p.suffix.lower() not in _SKIP_SUFFIXES
                  and "__pycache__" not in p.parts)


def reason_key(reason: str) -> str:
    """The stable part of an error reason (no sizes, names in parentheses kept short)."""
    reason = re.sub(r"[\d,]{2,}", "N", reason)
    return reason.split(" (pip install")[0][:110]


def needs_decoder(detail: str) -> bool:
    """True for a file that only a decoder that is not installed could read."""
    from mammojax.data.dicom_codecs import NEEDS_DECODER

    return NEEDS_DECODER in detail


def run_corpus(files: list[Path], *, timeout: float = 60.0) -> list[tuple[Path, str, str, float]]:
    """(path, outcome, detail, seconds) per file, read with the default pixel cap."""
    from mammojax.data.readers import DEFAULT_MAX_PIXELS

    return [(path, *classify(path, timeout=timeout, max_pixels=DEFAULT_MAX_PIXELS)) for path in files]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print one line per file")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.CRITICAL)  # pydicom/tifffile log warnings for the broken files
    files = corpus_files()
    start = time.perf_counter()
    results = run_corpus(files, timeout=args.timeout)
    wall = time.perf_counter() - start
    outcomes = Counter(outcome for _, outcome, _, _ in results)
    reasons = Counter(reason_key(detail) for _, outcome, detail, _ in results if outcome == "clean_error")
    if args.list:
        for path, outcome, detail, seconds in results:
            print(f"{outcome:<15} {seconds:6.2f}s {path.name:<45} {detail}")
    others = [r for r in results if r[1] not in ("loaded", "clean_error")]
    print(f"{len(files)} files in {wall:.1f} s: loaded {outcomes['loaded']}, clean errors {outcomes['clean_error']}, "
          f"other {len(others)}")
    for reason, n in reasons.most_common():
        print(f"  {n:>4}  {reason}")
    missing = sum(1 for _, outcome, detail, _ in results if outcome == "clean_error" and needs_decoder(detail))
    print(f"{missing} files need a decoder that is not installed")
    slowest = max(results, key=lambda r: r[3]) if results else None
    if slowest:
        print(f"slowest: {slowest[0].name} {slowest[3]:.2f} s ({slowest[1]})")
    for path, outcome, detail, _ in others:
        print(f"OTHER {outcome} {path}: {detail}")
    return 1 if others else 0


if __name__ == "__main__":
    sys.exit(main())
