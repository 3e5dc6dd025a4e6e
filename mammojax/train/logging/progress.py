"""Progress bar on stderr and metric writers (JSON lines + TensorBoard).

Only process 0 of a multi-process run reports; the others get no-op objects,
so the loop never branches on the process index.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from mammojax.workdir import Workdir


class ProgressBar:
    """A tqdm bar over the run's optimizer steps: loss, images/s, ETA."""

    def __init__(self, *, total_steps: int, initial_step: int, batch_size: int, enabled: bool = True):
        self.batch_size = batch_size
        self._bar = None
        self._last_time = time.perf_counter()
        self._last_step = initial_step
        self.images_per_second = math.nan
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=initial_step, unit="step", file=sys.stderr,
                             dynamic_ncols=True, smoothing=0.1, desc="train")

    def update(self, step: int, *, epoch: int, loss: float) -> None:
        now = time.perf_counter()
        done = step - self._last_step
        if done > 0 and now > self._last_time:
            rate = done * self.batch_size / (now - self._last_time)
            # Exponential smoothing: steady throughput, not the last step's noise.
            self.images_per_second = rate if math.isnan(self.images_per_second) else \
                0.8 * self.images_per_second + 0.2 * rate
        self._last_time, self._last_step = now, step
        if self._bar is not None:
            self._bar.set_postfix(epoch=epoch, loss=f"{loss:.4f}", img_s=f"{self.images_per_second:.1f}",
                                  refresh=False)
            self._bar.update(done)

    def write(self, line: str) -> None:
        """A line above the bar (tqdm.write keeps the bar intact)."""
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; null reads as "undefined" (e.g. AUC on one class)
    if hasattr(value, "item"):
        return _json_safe(value.item())
    return value


class MetricWriter:
    """Appends one JSON object per record to ``metrics.jsonl`` and mirrors scalars to TensorBoard."""

    def __init__(self, workdir: str | Path, *, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Workdir(workdir).metrics
        self._tb = None
        if enabled and tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(Workdir(workdir).tensorboard))

    def truncate_after(self, step: int) -> None:
        """Drops records past ``step``: a resumed run rewrites them, so none is duplicated."""
        if not self.enabled or not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        record = {k: _json_safe(v) for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self._tb is not None:
            step = int(record["step"])
            for key, value in record.items():
                if key not in ("step", "kind") and isinstance(value, (int, float)) and value is not None:
                    self._tb.add_scalar(f"{record.get('kind', 'train')}/{key}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
