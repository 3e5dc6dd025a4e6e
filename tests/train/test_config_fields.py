"""Every config field is declared once, in base_config(), with a comment; nothing reads around it."""

from __future__ import annotations

import re
from pathlib import Path

import ml_collections
import pytest

from mammojax.config import base_config, load_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.py"))


def _fields(config, prefix=""):
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        out.update(_fields(value, f"{name}.") if isinstance(value, ml_collections.ConfigDict) else {name: value})
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_uses_only_declared_fields_of_their_declared_type(path):
    declared = _fields(base_config())
    used = _fields(load_config(path))
    assert set(used) == set(declared), f"{path.name}: not in base_config(): {sorted(set(used) - set(declared))}"
    for name, value in used.items():  # so a --config.KEY=VALUE override parses the same for every config
        assert type(value) is type(declared[name]), f"{path.name}: {name} is {type(value).__name__}"


def test_every_base_field_has_a_comment():
    source = (REPO / "mammojax" / "config.py").read_text().splitlines()
    start = source.index("def base_config() -> ml_collections.ConfigDict:")
    source = source[start:source.index("    return c", start)]
    lines = [i for i, line in enumerate(source) if re.match(r"\s+c\.\w+(\.\w+)? = (?!ml_collections)", line)]
    assert len(lines) == len(_fields(base_config()))
    missing = [source[i].strip() for i in lines if "#" not in source[i] and not source[i - 1].strip().startswith("#")]
    assert not missing, f"fields without a comment: {missing}"


def test_the_smoke_variant_is_the_mias_config_at_smoke_sizes():
    mias, smoke = _fields(load_config(REPO / "configs" / "mias.py")), _fields(load_config(REPO / "configs" / "mias_smoke.py"))
    changed = {k for k in mias if mias[k] != smoke[k]}
    assert changed == {"data.image_size", "patch.size", "train.epochs", "patch.hard_negative_start",
                       "patch.positives_per_lesion", "eval.bootstrap", "eval.tta_hflip"}
    assert smoke["train.recipe"] == "patches" and smoke["data.image_size"] == 32


def test_the_package_reads_config_fields_directly():
    """No ``section.get(key, default)`` or ``_setting()`` fallbacks: an undeclared field must fail loudly."""
    offenders = []
    for path in (REPO / "mammojax").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"config\.\w+\.get\(|_setting\(", line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_mias_patch_schedule_is_warmup_then_cosine_over_all_steps():
    """configs/mias.py gives the patch trainer its optimizer through optim.*: AdamW 5e-4, one warmup epoch,
    cosine to 0 at the last step, as the patch recipe's own optax.warmup_cosine_decay_schedule did."""
    import numpy as np
    import optax

    from mammojax.train.optim import make_optimizer

    config = load_config(REPO / "configs" / "mias.py")
    steps_per_epoch, epochs = 14, int(config.train.epochs)
    total = steps_per_epoch * epochs
    _, schedule = make_optimizer(config.optim, steps_per_epoch=steps_per_epoch, epochs=epochs)
    reference = optax.warmup_cosine_decay_schedule(0.0, 5e-4, steps_per_epoch, total)
    ours = np.array([float(schedule(t)) for t in range(total + 1)])
    theirs = np.array([float(reference(t)) for t in range(total + 1)])
    assert config.optim.name == "adamw" and config.optim.weight_decay == 1e-4
    np.testing.assert_allclose(ours[steps_per_epoch:], theirs[steps_per_epoch:], rtol=1e-5, atol=1e-9)
    # The ramp starts at lr/warmup instead of 0, so the first step learns: at most one ramp step apart.
    assert np.all(np.abs(ours[:steps_per_epoch] - theirs[:steps_per_epoch]) <= 5e-4 / steps_per_epoch + 1e-9)
    assert ours.max() == pytest.approx(5e-4) and ours[-1] == pytest.approx(0.0, abs=1e-9)
