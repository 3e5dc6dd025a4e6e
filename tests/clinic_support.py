"""Shared pieces of the clinic tests (tests/clinic): operating points, planted identifiers."""

from __future__ import annotations

import io
import logging
from contextlib import redirect_stderr, redirect_stdout

# Each level its own (tau, temperature), so a row read at the wrong level shows.
# Offsets differ from 0 so that every consumer (predict, the SR, the export) must apply them.
OPERATING_POINTS = {"image": {"tau": 0.41, "temperature": 1.5, "offset": -0.4},
                    "breast": {"tau": 0.37, "temperature": 2.0, "offset": 0.3},
                    "patient": {"tau": 0.33, "temperature": 3.0, "offset": 0.0}}
IDENTIFIERS = {"PatientName": "Zarathustra^Ophelia", "PatientID": "PID-90417733",
               "PatientBirthDate": "19530217", "AccessionNumber": "ACC-7730561",
               "InstitutionName": "Saint Wilbrord Clinic", "ReferringPhysicianName": "Moriarty^Jim"}
IDENTIFIER_STRINGS = [*IDENTIFIERS.values(), "Zarathustra", "Ophelia", "Moriarty", "Wilbrord"]


def assert_no_identifiers(text: str | bytes, where: str, extra: tuple[str, ...] = ()) -> None:
    """None of the planted identifiers (nor ``extra``, e.g. the UIDs) in ``text``."""
    data = text.encode() if isinstance(text, str) else text
    for identifier in [*IDENTIFIER_STRINGS, *extra]:
        for form in {identifier, identifier.upper(), identifier.replace("^", " ")}:
            assert form.encode() not in data, f"{identifier!r} found in {where}"


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``mammojax ARGV`` in this process: (exit code, stdout + stderr + every log record)."""
    from mammojax.cli import main

    console = io.StringIO()
    handler = logging.StreamHandler(console)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with redirect_stdout(console), redirect_stderr(console):
            code = main(argv)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    return code, console.getvalue()
