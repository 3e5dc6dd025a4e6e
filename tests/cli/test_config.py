"""Config overrides: suggestions for misspelt keys, and validation before any work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mammojax.cli import main
from mammojax.config import base_config, load_config
from mammojax.train.config_check import validate_config
from mammojax.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("key, first", [
    ("optim.learning_rate", "optim.lr"),  # a synonym, not the spelling neighbour optim.name
    ("learning_rate", "optim.lr"),
    ("train.lr", "optim.lr"),  # the same leaf in another section
    ("train.num_epochs", "train.epochs"),
    ("train.batch", "train.batch_size"),
    ("model.image_size", "data.image_size"),
    ("optim.nmae", "optim.name"),  # a plain typo
    ("trian.epochs", "train.epochs"),  # a misspelt section keeps the rest of the key
    ("optimizer.lr", "optim.lr"),
])
def test_unknown_key_suggests_what_was_meant(key, first):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [f"--config.{key}=1"])
    message = str(caught.value)
    assert f"unknown config key {key!r}; did you mean {first}" in message, message


def test_key_below_a_value_names_the_value():
    with pytest.raises(ConfigError, match="'optim.lr' is a value, not a section"):
        load_config(None, ["optim.lr.max=1"])


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.py")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path, tmp_path):
    config = load_config(path)
    if config.data.dataset != "synthetic":
        config.data.data_dir = str(tmp_path)  # real datasets need a folder that exists
    validate_config(config)


def test_validation_lists_every_problem_in_one_line(tmp_path):
    config = base_config()
    config.model.name = "resnt18"
    config.optim.schedule = "cosin"
    config.train.batch_size = 0
    config.eval.tau = 1.5
    config.data.val_fraction, config.data.test_fraction = 0.6, 0.5
    config.data.dataset = "mias"
    config.data.data_dir = str(tmp_path / "missing")
    with pytest.raises(ConfigError) as caught:
        validate_config(config)
    message = str(caught.value)
    assert "\n" not in message
    for part in ("model.name='resnt18' is unknown (did you mean 'resnet18'?",
                 "optim.schedule='cosin' is unknown (did you mean 'cosine'?",
                 "train.batch_size=0 must be > 0", "eval.tau=1.5 must be in [0, 1]",
                 "data.val_fraction + data.test_fraction must be below 1",
                 f"{tmp_path / 'missing'}: data directory not found"):
        assert part in message, message


def test_init_checkpoint_must_exist_and_match_the_model(tmp_path):
    config = base_config()
    config.model.init_checkpoint = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="model.init_checkpoint: .*nowhere: checkpoint not found"):
        validate_config(config)


def test_train_with_a_misspelt_model_fails_before_data_or_workdir(tmp_path):
    workdir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MAMMOJAX_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-m", "mammojax", "train", "--config",
                             str(REPO / "configs" / "default.py"), "--workdir", str(workdir),
                             "--config.model.name=resnt18"],
                            env=env, text=True, capture_output=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mammojax: error: invalid config: model.name="), \
        result.stderr
    assert "did you mean 'resnet18'?" in lines[0]
    # Nothing was made: no workdir, no phantoms or decoded images in the cache.
    assert not workdir.exists() and not (tmp_path / "cache").exists()


def test_quickstart_validates_before_its_workdir(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MAMMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    workdir = tmp_path / "qs"
    code = main(["quickstart", "--workdir", str(workdir), "--config.optim.name=sgd"])
    err = capsys.readouterr().err
    assert code == 2 and "optim.name='sgd' is unknown" in err, err
    assert not workdir.exists()


@pytest.mark.parametrize("raw, stored", [("1024x832", "1024x832"), ("512", 512), ("512x512", 512)])
def test_image_size_override_takes_hxw_and_keeps_a_square_an_int(raw, stored):
    config = load_config(REPO / "configs" / "quickstart.py", [f"--config.data.image_size={raw}"])
    assert config.data.image_size == stored and type(config.data.image_size) is type(stored)
    validate_config(config)
    assert config.to_dict()["data"]["image_size"] == stored  # what the workdir's config.json records


def test_image_size_override_works_on_a_config_that_declared_an_int(tmp_path):
    path = tmp_path / "plain.py"
    path.write_text("import ml_collections\n\n\ndef get_config():\n    c = ml_collections.ConfigDict()\n"
                    "    c.data = ml_collections.ConfigDict()\n    c.data.image_size = 224\n    return c\n")
    assert load_config(path, ["--config.data.image_size=1024x832"]).data.image_size == "1024x832"


@pytest.mark.parametrize("raw", ["1024x", "0", "1024x4", "wide"])
def test_a_bad_image_size_is_one_line_naming_it(raw):
    with pytest.raises(ConfigError, match=rf"^data\.image_size='{raw}' must be a side S or HxW") as caught:
        load_config(None, [f"--config.data.image_size={raw}"])
    assert "\n" not in str(caught.value)
    config = base_config()
    config.data.image_size = raw  # set in a config file: validation says the same
    with pytest.raises(ConfigError, match=rf"data\.image_size='{raw}' must be"):
        validate_config(config)


def test_the_cli_takes_an_hxw_image_size(tmp_path, capsys, monkeypatch):
    # Validation reports only the misspelt model: the 1024x832 input passed it.
    monkeypatch.setenv("MAMMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    code = main(["quickstart", "--workdir", str(tmp_path / "qs"), "--config.data.image_size=1024x832",
                 "--config.model.name=resnt18"])
    err = capsys.readouterr().err
    assert code == 2 and "model.name='resnt18'" in err and "image_size" not in err, err
