"""``train_and_evaluate(config, workdir)``: the whole training run, resumable.

One run is: prepare the data (split by patient, decode once into a cache),
build the replicated train state, restore the latest checkpoint if the workdir
has one, then for each epoch train on the sharded batches and validate. Kill it
at any moment and run the same command again: it continues from the latest
checkpoint (epoch ends and every ``train.checkpoint_every_steps`` steps) and
ends with exactly the parameters an uninterrupted run would have.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from mammojax import runtime
from mammojax.errors import ConfigError, MammojaxError

CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
CONFIG_FILE = "config.json"


def _setting(section, key: str, default):
    """A config field that older configs (plain ``base_config()``) may lack."""
    return section.get(key, default) if hasattr(section, "get") else default


def train_and_evaluate(config, workdir: str | Path) -> dict:
    """Trains ``config`` in ``workdir``; returns a summary of the best epoch.

    The summary has ``best_epoch``, ``best_value`` (of ``train.best_metric``),
    ``best_metrics`` (validation metrics at the best epoch), ``steps``,
    ``history`` (one record per epoch) and ``best_checkpoint`` (a path).
    """
    runtime.setup()
    recipe = _setting(config.train, "recipe", "whole_image")
    if recipe == "patches":
        from mammojax.recipes.patch_train import train_patch_recipe

        return train_patch_recipe(config, workdir)
    if recipe != "whole_image":
        raise ConfigError(f"train.recipe must be 'whole_image' or 'patches' (got {recipe!r})")
    import jax

    from mammojax import models
    from mammojax.data.pipeline import train_batches
    from mammojax.train import sharding
    from mammojax.train.checkpointing import TrainCheckpoints, is_better, run_identity
    from mammojax.train.curves import CURVES_FILE, plot_training_curves
    from mammojax.train.data import prepare_training_data
    from mammojax.train.logging.progress import MetricWriter, ProgressBar
    from mammojax.train.optim import make_optimizer
    from mammojax.train.state import create_train_state, jit_steps

    workdir = Path(workdir).absolute()
    is_main = jax.process_index() == 0
    epochs = int(config.train.epochs)
    best_metric, best_mode = config.train.best_metric, config.train.best_mode
    if epochs < 1:
        raise ConfigError(f"train.epochs must be at least 1, got {epochs}")
    mesh = sharding.make_mesh()
    sharding.check_batch_size(int(config.train.batch_size), mesh)

    workdir.mkdir(parents=True, exist_ok=True)
    checkpoints = TrainCheckpoints(workdir / CHECKPOINTS_DIR, best_metric=best_metric, best_mode=best_mode)
    # Before anything is written: a workdir of another run is refused untouched.
    checkpoints.check_identity(run_identity(config))

    data = prepare_training_data(config, workdir, progress=is_main)
    steps_per_epoch = data.steps_per_epoch
    total_steps = steps_per_epoch * epochs
    model = models.create_model(config.model.name, num_classes=int(config.model.num_classes),
                                head_pooling=config.model.head_pooling, dtype=config.model.dtype)
    tx, schedule = make_optimizer(config.optim, steps_per_epoch=steps_per_epoch, epochs=epochs)
    root_key = jax.random.key(int(config.seed))
    state = create_train_state(model, tx, rng=jax.random.fold_in(root_key, 0),
                               image_size=int(config.data.image_size), mesh=mesh)
    if config.model.init_checkpoint:
        state = _load_initial_weights(state, config.model.init_checkpoint, config.model.name, mesh)

    restored = checkpoints.restore_latest(state)
    if restored is not None:
        state, progress = restored
    else:
        progress = {"identity": run_identity(config), "best_value": None, "best_epoch": None,
                    "history": [], "epoch_loss_sum": 0.0, "epoch_loss_count": 0}
    step = int(jax.device_get(state.step))
    if step > total_steps:
        raise ConfigError(f"{checkpoints.directory}: checkpoint at step {step} is past this config's "
                          f"{total_steps} steps ({epochs} epochs); raise train.epochs or use another workdir")

    writer = MetricWriter(workdir, enabled=is_main)
    if is_main:
        (workdir / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str))
        writer.truncate_after(step)

    num_classes = int(config.model.num_classes)
    weights = data.class_weights(num_classes) if config.optim.class_weighting \
        else np.ones(num_classes, np.float32)
    class_weights = jax.device_put(weights, sharding.replicated(mesh))
    train_step, _ = jit_steps(state, mesh, label_smoothing=float(config.optim.label_smoothing))
    every_steps = int(_setting(config.train, "checkpoint_every_steps", 0))
    every_epochs = max(1, int(config.train.checkpoint_every_epochs))
    log_every = max(1, int(config.train.log_every_steps))
    batch_size = int(config.train.batch_size)
    eval_batch = int(config.train.eval_batch_size)

    bar = ProgressBar(total_steps=total_steps, initial_step=step, batch_size=batch_size, enabled=is_main)
    last_saved = checkpoints.steps()[-1] if checkpoints.steps() else None
    try:
        for epoch in range(step // steps_per_epoch, epochs):
            start = step - epoch * steps_per_epoch
            batches = train_batches(data.train, config, epoch=epoch, start_step=start,
                                    process_index=jax.process_index(), process_count=jax.process_count())
            for local in batches:
                state, metrics = train_step(state, sharding.global_batch(local, mesh), class_weights)
                step += 1
                loss = float(_host(metrics["loss"]))
                if not math.isfinite(loss):
                    kept = f"step {last_saved}" if last_saved is not None else "none yet"
                    raise MammojaxError(
                        f"training diverged: loss is {loss} at step {step} (epoch {epoch + 1}); "
                        f"last good checkpoint in {checkpoints.directory}: {kept}; lower optim.lr")
                progress["epoch_loss_sum"] += loss
                progress["epoch_loss_count"] += 1
                bar.update(step, epoch=epoch + 1, loss=loss)
                if step % log_every == 0:
                    writer.write({"kind": "train", "step": step, "epoch": step / steps_per_epoch,
                                  "train_loss": loss, "grad_norm": float(_host(metrics["grad_norm"])),
                                  "lr": float(schedule(step - 1)), "images_per_second": bar.images_per_second})
                if every_steps and step % every_steps == 0 and step % steps_per_epoch:
                    checkpoints.save(step, state, progress)
                    last_saved = step

            # End of epoch: validate, maybe write the best model, checkpoint.
            val = evaluate(model, {"params": state.params, "batch_stats": state.batch_stats}, data.val, config,
                           batch_size=eval_batch)
            record = {"kind": "epoch", "step": step, "epoch": epoch + 1,
                      "train_loss": progress["epoch_loss_sum"] / max(1, progress["epoch_loss_count"]),
                      "lr": float(schedule(step - 1)), "images_per_second": bar.images_per_second}
            record.update({f"val_{k}": v for k, v in val.items()})
            writer.write(record)
            bar.write(_epoch_line(record))
            progress["history"].append({k: _finite_or_none(v) for k, v in record.items()})
            progress["epoch_loss_sum"], progress["epoch_loss_count"] = 0.0, 0
            value = val.get(best_metric)
            if value is None:
                raise ConfigError(f"train.best_metric {best_metric!r} is not a validation metric; "
                                  f"valid: {', '.join(sorted(val))}")
            improved = is_better(value, progress["best_value"], best_mode)
            if improved:
                progress["best_value"], progress["best_epoch"] = float(value), epoch + 1
                _save_best(workdir / BEST_DIR, state, config, val, epoch + 1, is_main)
            if improved or (epoch + 1) % every_epochs == 0 or epoch + 1 == epochs:
                checkpoints.save(step, state, progress, metric=value)
                last_saved = step
    finally:
        bar.close()
        writer.close()
        checkpoints.close()

    if is_main and progress["history"]:
        plot_training_curves(progress["history"], workdir / CURVES_FILE)
    best = next((r for r in progress["history"] if r["epoch"] == progress["best_epoch"]), {})
    return {"best_epoch": progress["best_epoch"], "best_value": progress["best_value"],
            "best_metrics": {k[4:]: v for k, v in best.items() if k.startswith("val_")},
            "steps": step, "history": progress["history"],
            "best_checkpoint": str(workdir / BEST_DIR), "state": state}


def evaluate(model, variables, cache, config, *, batch_size: int) -> dict:
    """Validation metrics at the operating point the config's policy picks on this set.

    Also returns ``loss`` (cross-entropy), ``tau`` and ``temperature``; the
    scores are those of :func:`validation_logits`.
    """
    logits, labels = validation_logits(model, variables, cache, config, batch_size=batch_size)
    return operating_point_metrics(logits, labels, config)


def validation_logits(model, variables, cache, config, *, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(film logits (N, C), labels (N,))`` of every example of ``cache``, each counted once.

    Films are scored by :class:`mammojax.scoring.Scorer` exactly as the saved
    checkpoint will score them (the config's film scoring, flip TTA
    included), so tau and the temperature are fitted on the scores they will
    be applied to.
    """
    from mammojax.data.pipeline import eval_batches
    from mammojax.scoring import Scorer, film_scoring_from_config

    # Host copies: in a multi-process run the state is a global array; each
    # process scores the validation films on its own devices.
    variables = {k: jax_tree_to_host(variables[k]) for k in ("params", "batch_stats")}
    scorer = Scorer(model, variables, film_scoring_from_config(config), batch_size=batch_size)
    logits, labels = [], []
    for batch in eval_batches(cache, scorer.batch_size):
        logits.append(scorer.logits(batch["image"][batch["mask"]]))
        labels.append(batch["label"][batch["mask"]])
    return np.concatenate(logits), np.concatenate(labels)


def jax_tree_to_host(tree):
    """NumPy copies of a pytree of (possibly multi-process, replicated) arrays."""
    import jax

    return jax.tree_util.tree_map(lambda x: np.asarray(_host(x)), tree)


def operating_point_metrics(logits: np.ndarray, labels: np.ndarray, config) -> dict:
    """Temperature, threshold and metrics from validation logits (host, NumPy)."""
    from mammojax.evaluation.calibration import apply_temperature, fit_temperature
    from mammojax.evaluation.metrics import classification_metrics
    from mammojax.evaluation.thresholds import choose_threshold

    temperature = fit_temperature(logits, labels) if config.eval.calibrate else 1.0
    scores = apply_temperature(logits, temperature)[:, 1]
    tau = choose_threshold(labels, scores, config.eval.threshold_policy, tau=float(config.eval.tau),
                           target=float(config.eval.target))
    metrics = classification_metrics(labels, scores, tau)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    metrics["loss"] = float(-log_probs[np.arange(labels.size), labels].mean())
    metrics["temperature"] = float(temperature)
    return metrics


def _save_best(directory: Path, state, config, val: dict, epoch: int, is_main: bool) -> None:
    from mammojax.checkpoint import make_meta, save_checkpoint

    variables = {"params": state.params, "batch_stats": state.batch_stats}
    # Every process takes part in the device->host copy; one writes the files.
    variables = jax_tree_to_host(variables)
    if not is_main:
        return
    extra = {"epoch": epoch, "val_metrics": {k: _finite_or_none(v) for k, v in val.items()}}
    save_checkpoint(directory, variables, make_meta(config, tau=val["tau"], temperature=val["temperature"],
                                                    extra=extra), overwrite=True)


def _load_initial_weights(state, path: str, model_name: str, mesh):
    """Starts from converted/pretrained weights (same model, e.g. from convert-weights)."""
    import jax

    from mammojax.checkpoint import load_checkpoint
    from mammojax.train.sharding import replicated

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

    return (f"epoch {record['epoch']}: loss {fmt('train_loss')}  val auc {fmt('val_auc')}  "
            f"sens {fmt('val_sensitivity')}  spec {fmt('val_specificity')}  acc {fmt('val_accuracy')}  "
            f"f1 {fmt('val_f1')}")


__all__ = ["train_and_evaluate", "evaluate", "operating_point_metrics", "validation_logits"]
