"""The trainer registry: train.recipe picks a trainer from one table; an unknown name lists the valid ones."""

from __future__ import annotations

import pytest

from mammojax.config import base_config
from mammojax.errors import ConfigError
from mammojax.train import patch_trainer, whole_image
from mammojax.train.trainers import TRAINERS, get_trainer


def test_the_table_holds_both_trainers():
    assert TRAINERS == {"whole_image": whole_image.train, "patches": patch_trainer.train}
    assert get_trainer("patches") is patch_trainer.train


def test_an_unknown_recipe_lists_the_valid_ones_before_any_work(tmp_path):
    from mammojax.train.trainers import train_and_evaluate

    config = base_config()
    config.train.recipe = "patchez"
    with pytest.raises(ConfigError, match="unknown train.recipe 'patchez'; valid: patches, whole_image"):
        train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_command_line_reports_an_unknown_recipe_in_one_line(tmp_path, capsys):
    from mammojax.cli import main

    code = main(["train", "--config", "configs/default.py", "--workdir", str(tmp_path / "w"),
                 "--config.train.recipe=boxes"])
    err = capsys.readouterr().err.strip()
    # (The config check names the valid trainers before the registry would.)
    assert code == 2 and len(err.splitlines()) == 1 and "'boxes'" in err
    assert "patches" in err and "whole_image" in err


def test_a_workdir_of_another_trainer_is_refused(tmp_path):
    """Identities differ in their keys too: a whole-image run does not resume a patch run's checkpoints."""
    import numpy as np

    from mammojax.errors import CheckpointError
    from mammojax.train.checkpointing import (
        IDENTITY_FIELDS,
        TrainCheckpoints,
        run_identity,
    )

    config = base_config()
    patches = run_identity(config, IDENTITY_FIELDS + patch_trainer.PATCH_IDENTITY_FIELDS)
    checkpoints = TrainCheckpoints(tmp_path / "checkpoints", best_metric="auc", best_mode="max")
    checkpoints.save(1, {"w": np.zeros(2, np.float32)}, {"identity": patches})
    checkpoints.check_identity(patches)
    with pytest.raises(CheckpointError, match="different run.*train.recipe='whole_image' \\(config: None\\)"):
        checkpoints.check_identity(run_identity(config))
    checkpoints.close()
