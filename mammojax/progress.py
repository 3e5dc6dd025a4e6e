"""Progress on stderr for long work: one bar style for every command.

A tqdm bar shows the count, the rate (images/s, steps/s) and the ETA. It is
drawn only when stderr is a terminal (``enabled=None``), so logs and CI output
stay clean; callers that must stay silent (other processes of a multi-host
run) pass ``enabled=False``.
"""

from __future__ import annotations

import sys


def progress_bar(total: int, *, desc: str, unit: str = "img", enabled: bool | None = None, initial: int = 0):
    """A tqdm bar over ``total`` items (``update(n)``, ``set_postfix``, ``write``, ``close``)."""
    from tqdm import tqdm

    stream = sys.stderr
    if enabled is None:
        enabled = stream.isatty()
    return tqdm(total=total, initial=initial, unit=unit, desc=desc, disable=not enabled, file=stream,
                dynamic_ncols=True, smoothing=0.1)
