"""The optimizer: Adam/AdamW, warmup + schedule, gradient clipping (one optax chain)."""

from __future__ import annotations

import optax

from mammojax.errors import ConfigError

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")


def learning_rate_schedule(optim_config, *, steps_per_epoch: int, epochs: int) -> optax.Schedule:
    """Linear warmup over ``warmup_epochs`` then constant or cosine decay to 0."""
    if optim_config.schedule not in SCHEDULES:
        raise ConfigError(f"unknown optim.schedule {optim_config.schedule!r}; valid: {', '.join(SCHEDULES)}")
    lr = float(optim_config.lr)
    total = max(1, int(steps_per_epoch * epochs))
    warmup = min(total, int(round(float(optim_config.warmup_epochs) * steps_per_epoch)))
    if optim_config.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, decay_steps=max(1, total - warmup))
    else:
        main = optax.constant_schedule(lr)
    if warmup == 0:
        return main
    # Start from lr/warmup rather than 0 so the very first step still learns.
    ramp = optax.linear_schedule(lr / warmup, lr, transition_steps=warmup)
    return optax.join_schedules([ramp, main], boundaries=[warmup])


def make_optimizer(optim_config, *, steps_per_epoch: int, epochs: int):
    """``(optax transformation, schedule)`` for the config's ``optim`` section."""
    name = optim_config.name
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optim.name {name!r}; valid: {', '.join(OPTIMIZERS)}")
    schedule = learning_rate_schedule(optim_config, steps_per_epoch=steps_per_epoch, epochs=epochs)
    parts = []
    if optim_config.grad_clip_norm and optim_config.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(float(optim_config.grad_clip_norm)))
    if name == "adamw":
        parts.append(optax.adamw(schedule, weight_decay=float(optim_config.weight_decay)))
    else:
        # Adam with L2-style decay folded into the gradient, as torch.optim.Adam does.
        if optim_config.weight_decay:
            parts.append(optax.add_decayed_weights(float(optim_config.weight_decay)))
        parts.append(optax.adam(schedule))
    return optax.chain(*parts), schedule
