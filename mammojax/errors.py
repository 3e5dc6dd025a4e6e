"""The one exception type that users see.

Every failure caused by the user's input (a missing file, a corrupt image, an
unknown model name, a bad config key) is raised as a ``MammojaxError``. The CLI
turns it into a single line on stderr and a non-zero exit; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import os


class MammojaxError(Exception):
    """A user-facing error: its message is one line that names the problem."""

    exit_code = 2


class ImageReadError(MammojaxError):
    """An image file could not be read or failed screening.

    The message always names the file (by path only: never anything taken from
    a DICOM header, which may carry patient identifiers).
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ConfigError(MammojaxError):
    """A configuration key or value is wrong."""


class CheckpointError(MammojaxError):
    """A checkpoint is missing, corrupt, or belongs to another model."""


class TrainingStopped(Exception):
    """Not an error: a run stopped on request (SIGTERM) after saving a checkpoint.

    The CLI prints its one-line message and exits 0; running the same command
    again resumes exactly where it stopped. Library callers (cross-validation)
    let it pass through, so they stop too.
    """
