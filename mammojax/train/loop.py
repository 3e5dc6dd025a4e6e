"""The training core: one loop that every trainer feeds, resumable bit for bit.

:func:`mammojax.train.trainers.train_and_evaluate` runs the trainer that
``config.train.recipe`` names (the loop knows no trainer: they import it).
A trainer differs from another only in what it feeds :func:`fit` (a
:class:`Feed`): its batches per epoch, its step count, how it validates and
what its best checkpoint records. Everything else is this loop's, the same for
all: the train state and jitted steps (:mod:`~mammojax.train.state`), the one
optimizer built from ``config.optim``, data parallelism over every device of
every process (:mod:`~mammojax.train.sharding`), orbax checkpoints with exact
resume (:mod:`~mammojax.train.checkpointing`), the metric writer and progress
bar, the tau / temperature fit (:mod:`mammojax.train.validation`) and the
workdir layout (:mod:`mammojax.workdir`).

Kill a run at any moment and run the same command again: it continues from
the latest checkpoint (epoch ends, every ``train.checkpoint_every_steps``
steps and every ``train.checkpoint_every_minutes``) and ends with exactly the
parameters an uninterrupted run would have, provided the trainer's batches
are a pure function of (config, epoch, step, and what it kept in the
checkpoint's ``memo``). SIGTERM (a scheduler's preemption) saves a checkpoint
at the next step boundary and stops with :class:`~mammojax.errors.TrainingStopped`
(``mammojax train`` exits 0). The host never waits for a step to read its
loss: losses and gradient norms are fetched every ``train.log_every_steps``
steps (and before every checkpoint), where divergence is detected.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from mammojax.checkpoint import load_checkpoint, make_meta, save_checkpoint
from mammojax.errors import ConfigError, MammojaxError, TrainingStopped
from mammojax.evaluation.operating_points import calibration_warnings, read_operating_points
from mammojax.train.curves import plot_training_curves
from mammojax.train.logging.progress import MetricWriter, ProgressBar
from mammojax.workdir import Workdir


@dataclasses.dataclass(frozen=True)
class Run:
    """What a trainer's ``prepare`` may use: the config, the workdir, the device mesh, the model."""

    config: object
    workdir: object  # mammojax.workdir.Workdir
    mesh: object
    model: object
    is_main: bool  # process 0: the one that writes files and prints


@dataclasses.dataclass(frozen=True)
class Feed:
    """What a trainer feeds the core loop.

    ``batches(state, epoch, start_step, memo)`` returns this process's share
    of the epoch's global batches from ``start_step`` on, as NumPy dicts
    ``{"image", "label"}``; ``memo`` is a JSON dict saved in every checkpoint,
    for choices a trainer made from the network (it must not depend on
    anything else that a resumed run could see differently).
    ``validate(state)`` returns the validation metrics with ``tau``,
    ``temperature`` and the per-level ``operating_points`` (see :func:`evaluate`).
    """

    steps_per_epoch: int
    batches: Callable[..., Iterable[dict]]
    validate: Callable[..., dict]
    class_weights: np.ndarray
    # True: validate every epoch and keep the best as best/. False: a fixed
    # schedule whose last epoch is the model, validated once at the end.
    select_epoch: bool = True
    best_meta: dict = dataclasses.field(default_factory=dict)  # extra metadata for best/
    description: str = ""  # one line printed before the first step


def fit(config, workdir: str | Path, prepare: Callable[[Run], Feed], *, identity: dict) -> dict:
    """The loop: ``prepare(run)`` gives the :class:`Feed`; returns a summary of the run.

    ``identity`` is what a checkpoint in ``workdir`` must match to be resumed
    (:func:`~mammojax.train.checkpointing.run_identity` plus what the trainer adds).
    The summary has ``recipe``, ``epoch_selected``, ``best_epoch``, ``best_value``
    (of ``train.best_metric``), ``best_metrics`` (validation metrics at the best
    epoch), ``steps``, ``trained_steps`` (run by this call: 0 when the workdir held
    a finished run), ``history`` (one record per epoch), ``best_checkpoint`` (a
    path) and ``state`` (the final train state).
    """
    import jax

    # These import JAX, flax, optax or orbax at the top: the loop module stays light, so
    # importing a trainer never loads JAX before runtime.setup() (train_and_evaluate) runs.
    from mammojax import models
    from mammojax.train import sharding
    from mammojax.train.checkpointing import TrainCheckpoints, is_better
    from mammojax.train.losses import cam_guidance
    from mammojax.train.optim import make_optimizer
    from mammojax.train.state import create_train_state, jit_steps

    workdir = Workdir(workdir)
    is_main = jax.process_index() == 0
    epochs = int(config.train.epochs)
    best_metric, best_mode = config.train.best_metric, config.train.best_mode
    if epochs < 1:
        raise ConfigError(f"train.epochs must be at least 1, got {epochs}")
    mesh = sharding.make_mesh()
    sharding.check_batch_size(int(config.train.batch_size), mesh)

    workdir.root.mkdir(parents=True, exist_ok=True)
    checkpoints = TrainCheckpoints(workdir.checkpoints, best_metric=best_metric, best_mode=best_mode)
    # Before anything is written: a workdir of another run is refused untouched.
    checkpoints.check_identity(identity)

    model = models.create_model(config.model.name, num_classes=int(config.model.num_classes),
                                head_pooling=config.model.head_pooling, dtype=config.model.dtype)
    feed = prepare(Run(config=config, workdir=workdir, mesh=mesh, model=model, is_main=is_main))
    steps_per_epoch = int(feed.steps_per_epoch)
    total_steps = steps_per_epoch * epochs
    tx, schedule = make_optimizer(config.optim, steps_per_epoch=steps_per_epoch, epochs=epochs)
    root_key = jax.random.key(int(config.seed))
    state = create_train_state(model, tx, rng=jax.random.fold_in(root_key, 0),
                               image_size=config.data.image_size, mesh=mesh)
    if config.model.init_checkpoint:
        state = _load_initial_weights(state, config.model.init_checkpoint, config.model.name, mesh)

    restored = checkpoints.restore_latest(state)
    if restored is not None:
        state, progress = restored
    else:
        progress = {"identity": identity, "best_value": None, "best_epoch": None,
                    "history": [], "epoch_loss_sum": 0.0, "epoch_loss_count": 0, "memo": {}}
    memo = progress.setdefault("memo", {})  # checkpoints written before trainers kept a memo lack it
    step = int(jax.device_get(state.step))
    first_step = step
    if step > total_steps:
        raise ConfigError(f"{checkpoints.directory}: checkpoint at step {step} is past this config's "
                          f"{total_steps} steps ({epochs} epochs); raise train.epochs or use another workdir")

    writer = MetricWriter(workdir.root, enabled=is_main)
    if is_main:
        workdir.write_config(config)
        writer.truncate_after(step)

    class_weights = jax.device_put(np.asarray(feed.class_weights, np.float32), sharding.replicated(mesh))
    # train.cam_loss_weight > 0: the explanation-guided step, whose batches carry lesion masks.
    guidance = cam_guidance(config, model)
    train_step = jit_steps(state, mesh, label_smoothing=float(config.optim.label_smoothing), guidance=guidance)
    every_steps = int(config.train.checkpoint_every_steps)
    every_seconds = 60.0 * float(config.train.checkpoint_every_minutes)
    every_epochs = max(1, int(config.train.checkpoint_every_epochs))
    log_every = max(1, int(config.train.log_every_steps))
    batch_size = int(config.train.batch_size)
    if is_main and feed.description and step < total_steps:
        print(f"{feed.description}; {mesh.devices.size} devices", file=sys.stderr, flush=True)

    bar = ProgressBar(total_steps=total_steps, initial_step=step, batch_size=batch_size, enabled=is_main)
    pending = _PendingMetrics(progress=progress, bar=bar, writer=writer, schedule=schedule,
                              steps_per_epoch=steps_per_epoch, log_every=log_every, directory=checkpoints.directory)
    sigterm = _StopRequest()
    saved = {"step": checkpoints.steps()[-1] if checkpoints.steps() else None, "time": time.monotonic()}

    def save(metric=None) -> None:
        pending.flush(last_saved=saved["step"])  # a diverged step must never reach a checkpoint
        checkpoints.save(step, state, progress, metric=metric)
        saved.update(step=step, time=time.monotonic())

    try:
        for epoch in range(step // steps_per_epoch, epochs):
            start = step - epoch * steps_per_epoch
            stopping = False
            for local in feed.batches(state, epoch, start, memo):
                if guidance is not None and "lesion_mask" not in local:
                    raise ConfigError(f"train.cam_loss_weight > 0: the {config.train.recipe!r} trainer "
                                      "feeds no lesion masks (explanation-guided training needs whole_image)")
                state, metrics = train_step(state, sharding.global_batch(local, mesh), class_weights)
                step += 1
                pending.add(step, metrics)  # no host sync here: fetched every log_every steps
                boundary = step % log_every == 0
                if boundary:
                    pending.flush(last_saved=saved["step"])
                stopping = sigterm.requested
                timed = boundary and every_seconds > 0 and time.monotonic() - saved["time"] >= every_seconds
                if jax.process_count() > 1:  # saving is collective: processes decide together, at log steps
                    stopping, timed = _agree(stopping, timed) if boundary else (False, False)
                if step % steps_per_epoch and (stopping or timed or (every_steps and step % every_steps == 0)):
                    save()
                if stopping:
                    break
            if stopping and step % steps_per_epoch:
                raise TrainingStopped(_stopped_line(step, epoch, epochs, checkpoints.directory))
            if step != (epoch + 1) * steps_per_epoch:
                raise MammojaxError(f"epoch {epoch + 1} ended at step {step}, not at "
                                    f"{(epoch + 1) * steps_per_epoch}: the trainer fed too few batches")
            pending.flush(last_saved=saved["step"])

            # End of epoch: validate (every epoch, or after the last one), maybe write the best model, checkpoint.
            last_epoch = epoch + 1 == epochs
            val = feed.validate(state) if feed.select_epoch or last_epoch else None
            # Per-level operating points go to best/, not into the per-epoch records.
            points = val.pop("operating_points", None) if val else None
            record = {"kind": "epoch", "step": step, "epoch": epoch + 1,
                      "train_loss": progress["epoch_loss_sum"] / max(1, progress["epoch_loss_count"]),
                      "lr": float(schedule(step - 1)), "images_per_second": bar.images_per_second}
            record.update({f"val_{k}": v for k, v in (val or {}).items()})
            writer.write(record)
            bar.write(_epoch_line(record))
            progress["history"].append({k: _finite_or_none(v) for k, v in record.items()})
            progress["epoch_loss_sum"], progress["epoch_loss_count"] = 0.0, 0
            if val is None:
                if (epoch + 1) % every_epochs == 0 or stopping:
                    save()
            else:
                value = val.get(best_metric)
                if value is None:
                    raise ConfigError(f"train.best_metric {best_metric!r} is not a validation metric; "
                                      f"valid: {', '.join(sorted(val))}")
                # A fixed schedule keeps its last epoch, whatever its value (even a NaN AUC).
                improved = is_better(value, progress["best_value"], best_mode) if feed.select_epoch else True
                if improved:
                    progress["best_value"], progress["best_epoch"] = _finite_or_none(float(value)), epoch + 1
                    best_meta = {**feed.best_meta, **({"operating_points": points} if points else {})}
                    # A level fit that ended at its bound is said in best/ itself, and printed at the end.
                    progress["calibration_warnings"] = calibration_warnings(read_operating_points(best_meta))
                    best_meta["calibration_warnings"] = progress["calibration_warnings"]
                    _save_best(workdir.best, state, config, val, epoch + 1, is_main, best_meta)
                if improved or (epoch + 1) % every_epochs == 0 or last_epoch or stopping:
                    save(metric=value)
            if stopping and not last_epoch:
                raise TrainingStopped(_stopped_line(step, epoch, epochs, checkpoints.directory))
    finally:
        sigterm.close()
        bar.close()
        writer.close()
        checkpoints.close()

    if is_main and progress["history"]:
        plot_training_curves(progress["history"], workdir.curves)
    best = next((r for r in progress["history"] if r["epoch"] == progress["best_epoch"]), {})
    return {"recipe": config.train.recipe, "epoch_selected": feed.select_epoch,
            "best_epoch": progress["best_epoch"], "best_value": progress["best_value"],
            "best_metrics": {k[4:]: v for k, v in best.items() if k.startswith("val_")},
            "steps": step, "trained_steps": step - first_step, "history": progress["history"],
            "best_checkpoint": str(workdir.best), "state": state,
            "calibration_warnings": list(progress.get("calibration_warnings") or [])}


class _PendingMetrics:
    """The per-step loss and gradient norm, kept on the device until the next fetch.

    Reading a step's loss on the host makes the host wait for that step; the
    loop instead fetches the steps since the last fetch in one transfer, every
    ``train.log_every_steps`` steps, before every checkpoint and at epoch ends.
    A non-finite loss is found there: the error names the step and the range
    checked together, and since every save fetches first, no checkpoint ever
    holds a diverged state.
    """

    def __init__(self, *, progress: dict, bar, writer, schedule, steps_per_epoch: int, log_every: int,
                 directory):
        self.progress, self.bar, self.writer, self.schedule = progress, bar, writer, schedule
        self.steps_per_epoch, self.log_every, self.directory = steps_per_epoch, log_every, directory
        self._items: list[tuple[int, dict]] = []

    def add(self, step: int, metrics: dict) -> None:
        self._items.append((step, metrics))

    def flush(self, *, last_saved: int | None) -> None:
        if not self._items:
            return
        import jax

        items, self._items = self._items, []
        values = jax.device_get([(_host(m["loss"]), _host(m["grad_norm"])) for _, m in items])
        # The guided step's unweighted CAM loss (train.cam_loss_weight > 0) goes to the records too.
        cam = jax.device_get([_host(m["cam_loss"]) if "cam_loss" in m else None for _, m in items])
        first, last = items[0][0], items[-1][0]
        losses = [float(loss) for loss, _ in values]
        for (step, _), loss in zip(items, losses):
            if not math.isfinite(loss):
                kept = f"step {last_saved}" if last_saved is not None else "none yet"
                checked = f"steps {first}-{last} checked together" if last > first else f"step {step} checked"
                raise MammojaxError(
                    f"training diverged: loss is {loss} at step {step} "
                    f"(epoch {(step - 1) // self.steps_per_epoch + 1}; {checked}); "
                    f"last good checkpoint in {self.directory}: {kept}; lower optim.lr")
        for loss in losses:  # one at a time: the same sum however the steps were fetched (resume)
            self.progress["epoch_loss_sum"] += loss
        self.progress["epoch_loss_count"] += len(losses)
        self.bar.update(last, epoch=(last - 1) // self.steps_per_epoch + 1, loss=losses[-1])
        for (step, _), loss, (_, grad_norm), cam_loss in zip(items, losses, values, cam):
            if step % self.log_every == 0:
                self.writer.write({"kind": "train", "step": step, "epoch": step / self.steps_per_epoch,
                                   "train_loss": loss, "grad_norm": float(grad_norm),
                                   **({} if cam_loss is None else {"train_cam_loss": float(cam_loss)}),
                                   "lr": float(self.schedule(step - 1)),
                                   "images_per_second": self.bar.images_per_second})


class _StopRequest:
    """SIGTERM, while the loop runs, asks it to stop at the next step boundary (after a checkpoint).

    Only the main thread may install signal handlers; elsewhere (a run started
    from a worker thread) SIGTERM keeps its usual meaning.
    """

    def __init__(self):
        self.requested = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


def _agree(*flags: bool) -> tuple[bool, ...]:
    """Each flag, true when it is true on any process (a collective: every process must call it)."""
    from jax.experimental import multihost_utils

    gathered = np.asarray(multihost_utils.process_allgather(np.asarray(flags, np.int32)))
    return tuple(bool(v) for v in gathered.reshape(-1, len(flags)).max(axis=0))


def _stopped_line(step: int, epoch: int, epochs: int, directory) -> str:
    return (f"stopped by SIGTERM at step {step} (epoch {epoch + 1} of {epochs}); checkpoint saved in {directory}; "
            "run the same command to resume")


def host_variables(state) -> dict:
    """``{"params", "batch_stats"}`` of a (replicated) train state as host NumPy arrays.

    Every process must call it (each copies its local replica).
    """
    import jax

    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return jax.tree_util.tree_map(lambda x: np.asarray(_host(x)), variables)


def _save_best(directory: Path, state, config, val: dict, epoch: int, is_main: bool, meta: dict) -> None:
    # Every process takes part in the device->host copy; one writes the files.
    variables = host_variables(state)
    if not is_main:
        return
    extra = {"epoch": epoch, "val_metrics": {k: _finite_or_none(v) for k, v in val.items()}, **meta}
    save_checkpoint(directory, variables, make_meta(config, tau=val["tau"], temperature=val["temperature"],
                                                    extra=extra), overwrite=True)


def _load_initial_weights(state, path: str, model_name: str, mesh):
    """Starts from converted/pretrained weights (same model, e.g. from convert-weights)."""
    import jax

    from mammojax.train.sharding import replicated  # imports JAX at the top (see fit)

    loaded = load_checkpoint(path, expect_model=model_name)
    place = lambda tree: jax.device_put(tree, replicated(mesh))  # noqa: E731
    return state.replace(params=place(loaded.variables["params"]),
                         batch_stats=place(loaded.variables["batch_stats"]))


def _host(x):
    """A replicated global array as a local value (works in multi-process runs too)."""
    return x.addressable_data(0) if hasattr(x, "addressable_data") else x


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _epoch_line(record: dict) -> str:
    def fmt(key):
        v = record.get(key)
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    if "val_auc" not in record:  # an epoch of a fixed schedule: validated only after the last
        return f"epoch {record['epoch']}: loss {fmt('train_loss')}"
    return (f"epoch {record['epoch']}: loss {fmt('train_loss')}  val auc {fmt('val_auc')}  "
            f"sens {fmt('val_sensitivity')}  spec {fmt('val_specificity')}  acc {fmt('val_accuracy')}  "
            f"f1 {fmt('val_f1')}")


__all__ = ["Feed", "Run", "fit", "host_variables"]
