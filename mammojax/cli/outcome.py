"""How the batch commands (predict, explain, eval) end: one exit-code policy, one skip line.

A batch goes on past a file it cannot read: the file gets one line on stderr,
``mammojax: skipped PATH: REASON``, and a row in the command's output. The
exit status then tells a script what happened (``EXIT_STATUS_HELP`` quotes
it in each command's ``--help``):

* 0: every input was scored;
* 3: some inputs were skipped, the others scored and written;
* 2: nothing was scored: no image among the inputs, every input unreadable,
  or a usage error (a bad option, a missing checkpoint). 2 is also
  ``MammojaxError.exit_code`` and click's usage-error status;
* 1: an unexpected failure (a full disk, a bug).

Imports only click, so CLI modules can use it at import time.
"""

from __future__ import annotations

import os
from typing import Sequence

import click

from mammojax.errors import ImageReadError, MammojaxError

EXIT_OK = 0
EXIT_NOTHING_SCORED = MammojaxError.exit_code
EXIT_PARTIAL = 3

EXIT_STATUS_HELP = ("Exit status: 0 every input scored; 3 some inputs skipped (each named on "
                    "stderr as 'mammojax: skipped PATH: REASON'), the rest scored and written; "
                    "2 nothing scored (no image among the inputs, every input unreadable) or a "
                    "usage error; 1 an unexpected failure.")


def exit_code(scored: int, failed: int) -> int:
    """The exit status for a batch that scored ``scored`` inputs and skipped ``failed``."""
    if scored == 0:
        return EXIT_NOTHING_SCORED
    return EXIT_PARTIAL if failed else EXIT_OK


def finish(scored: int, failed: int, *, verb: str = "score") -> None:
    """Ends a batch command with :func:`exit_code`'s status (returns on 0).

    Nothing scored is an error line; a partial run has already named each
    skipped input and only sets the status.
    """
    code = exit_code(scored, failed)
    if code == EXIT_NOTHING_SCORED:
        what = "the input" if failed == 1 else f"any of the {failed} inputs"
        raise MammojaxError(f"could not {verb} {what}")
    if code:
        raise click.exceptions.Exit(code)


def report_skipped(path: str | os.PathLike, reason: str | BaseException) -> None:
    """The one stderr line for an input a batch skipped."""
    if isinstance(reason, ImageReadError):
        reason = reason.reason
    text, path = str(reason), str(path)
    # Some readers put the path in front of their message already; say it once.
    text = text.removeprefix(f"{path}: ")
    click.echo(f"mammojax: skipped {path}: {text}", err=True)


def require_images(items: Sequence, inputs: Sequence[str]) -> None:
    """Refuses INPUTS that hold no image (a folder of text files, an empty manifest).

    Called before any output exists or JAX loads.
    """
    if items:
        return
    from mammojax.predict import IMAGE_SUFFIXES

    shown = ", ".join(str(i) for i in inputs[:3]) + (", ..." if len(inputs) > 3 else "")
    raise MammojaxError(f"no image in {shown} (looked for {', '.join(sorted(IMAGE_SUFFIXES))} "
                        "files, DICOM files without a suffix, or a .csv manifest with a 'path' column)")
