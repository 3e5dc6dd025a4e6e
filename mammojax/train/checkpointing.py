"""Resumable training checkpoints (orbax CheckpointManager in ``WORKDIR/checkpoints``).

Each checkpoint holds two items:

* ``state``: the whole :class:`~mammojax.train.state.TrainState` (parameters,
  BatchNorm statistics, optimizer state, step, dropout key);
* ``progress``: JSON with the data position (epoch, step), the best validation
  value so far, the per-epoch history and the run's *identity* (the config
  fields a checkpoint cannot outlive, e.g. the model name).

The manager keeps the latest two checkpoints (so a corrupt latest one still
leaves a good one to resume from) and the best one by the validation metric.
The step number of a checkpoint is the global optimizer step, which together
with the fixed steps-per-epoch says exactly where in the data to continue.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import jax

from mammojax.data.preprocess import image_size_of
from mammojax.errors import CheckpointError

KEEP_LATEST = 2
BEST_MODES = ("max", "min")  # train.best_mode: whether a higher or a lower validation value is better

# Config fields that must match for a workdir's checkpoint to be resumed.
IDENTITY_FIELDS = (
    "model.name", "model.num_classes", "model.head_pooling", "data.image_size", "data.dataset",
    "data.task", "train.batch_size", "seed",
)


# Fields with several spellings of one value: 256, "256x256" and (256, 256) are the same run.
_CANONICAL = {"data.image_size": image_size_of}


def run_identity(config, fields: tuple[str, ...] = IDENTITY_FIELDS) -> dict:
    """The values of ``fields`` (dotted config keys; default :data:`IDENTITY_FIELDS`) in ``config``."""
    out = {}
    for dotted in fields:
        node = config
        for part in dotted.split("."):
            node = node[part]
        out[dotted] = _CANONICAL[dotted](node) if dotted in _CANONICAL else node
    return out


def _ranking_value(value: float, mode: str) -> float:
    """NaN (e.g. an AUC on a one-class split) ranks last instead of breaking the sort."""
    if value is None or math.isnan(value):
        return -math.inf if mode == "max" else math.inf
    return float(value)


def is_better(value: float, best: float | None, mode: str) -> bool:
    if value is None or math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value > best if mode == "max" else value < best


class TrainCheckpoints:
    """Save and restore training checkpoints under ``directory``."""

    def __init__(self, directory: str | Path, *, best_metric: str, best_mode: str):
        import orbax.checkpoint as ocp
        from orbax.checkpoint import checkpoint_managers as policies

        if best_mode not in BEST_MODES:
            raise CheckpointError(f"train.best_mode must be 'max' or 'min', got {best_mode!r}")
        self.directory = Path(directory).absolute()
        self.best_metric = best_metric
        self.best_mode = best_mode
        preserve = policies.AnyPreservationPolicy([
            policies.LatestN(n=KEEP_LATEST),
            # Only epoch-end checkpoints carry metrics; mid-epoch ones live by LatestN alone.
            policies.BestN(get_metric_fn=lambda m: m["value"], reverse=best_mode == "min", n=1,
                           keep_checkpoints_without_metrics=False),
        ])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=preserve, create=True,
            # best_fn makes orbax write each step's metrics to disk; without it
            # they are kept in memory only and a resumed run forgets which
            # checkpoint was best (and lets BestN delete it).
            best_fn=lambda m: m["value"], best_mode=best_mode,
            # Synchronous: a step's checkpoint is complete before the state is donated
            # to the next step, and a SIGKILL leaves either a whole one or none.
            enable_async_checkpointing=False)
        self._ocp = ocp
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "progress"))

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state, progress: dict, *, metric: float | None = None) -> None:
        ocp = self._ocp
        metrics = None if metric is None else {"value": _ranking_value(metric, self.best_mode)}
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        progress=ocp.args.JsonSave(progress)),
                          metrics=metrics, force=True)
        self.manager.wait_until_finished()

    def read_progress(self, step: int) -> dict:
        ocp = self._ocp
        restored = self.manager.restore(step, args=ocp.args.Composite(progress=ocp.args.JsonRestore()))
        return dict(restored["progress"])

    def check_identity(self, identity: dict) -> None:
        """Refuses a workdir whose checkpoints belong to another model or data setup."""
        for step in reversed(self.steps()):
            try:
                saved = self.read_progress(step).get("identity", {})
            except Exception:  # a corrupt checkpoint is handled by restore_latest
                continue
            # Both ways round: a key only one side has (another trainer's run) is a difference too.
            # Compared as JSON, the form the saved side went through.
            identity = json.loads(json.dumps(identity))
            diff = [f"{k}={saved.get(k)!r} (config: {identity.get(k)!r})" for k in sorted(set(saved) | set(identity))
                    if saved.get(k) != identity.get(k)]
            if diff:
                raise CheckpointError(
                    f"{self.directory}: holds checkpoints of a different run ({'; '.join(diff)}); "
                    "use another --workdir or delete this one")
            return

    def restore_latest(self, template_state):
        """``(state, progress)`` from the newest readable checkpoint, or None if there is none.

        A checkpoint that fails to restore (a file deleted or truncated) is
        reported in one warning line and the next older one is tried.
        """
        ocp = self._ocp
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template_state)
        for step in reversed(self.steps()):
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), progress=ocp.args.JsonRestore()))
            except Exception as err:  # corrupt on disk: any orbax/tensorstore error type
                reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
                if jax.process_index() == 0:
                    print(f"mammojax: warning: {self.directory / str(step)}: unreadable checkpoint "
                          f"({reason}); resuming from an older one", file=sys.stderr, flush=True)
                # Out of the way, so the step can be saved again when training gets there.
                self.manager.delete(step)
                continue
            return restored["state"], dict(restored["progress"])
        return None

    def close(self) -> None:
        self.manager.close()
