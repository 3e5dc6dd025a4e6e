"""Class names come from the dataset's task: the adapters are their one home (issue 19 item 3)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from mias_support import write_mias_folder

from mammojax.data.adapters import ADAPTERS
from mammojax.data.records import class_names, dataset_task
from mammojax.errors import MammojaxError


def test_every_task_of_every_dataset_names_its_two_classes():
    for name, adapter in ADAPTERS.items():
        assert "default" in adapter.tasks, name
        for task in adapter.tasks:
            names = class_names(name, task)
            assert len(names) == 2 and names[0] != names[1] and all(names), (name, task)
            assert dataset_task(name, task).description, (name, task)


def test_names_follow_what_the_label_means():
    # MIAS's default task counts benign findings as positive: "abnormal", never "cancer".
    assert class_names("mias", "default") == class_names("mias", "abnormal") == ("normal", "abnormal")
    assert class_names("mias", "malignant")[1] == "malignant"
    assert class_names("cbis_ddsm") == ("benign", "malignant")
    assert class_names("inbreast")[1] == "suspicious"  # BI-RADS proxy, no biopsy
    assert class_names("synthetic") == ("normal", "lesion")


def test_unknown_dataset_or_task_is_one_line():
    with pytest.raises(MammojaxError, match="valid names"):
        class_names("nope")
    with pytest.raises(MammojaxError, match="valid tasks: default, abnormal, malignant"):
        class_names("mias", "cancer")
    with pytest.raises(MammojaxError, match="no normal images"):
        class_names("cbis_ddsm", "abnormal")


def test_checkpoint_metadata_carries_the_training_tasks_names():
    from mammojax.checkpoint import Checkpoint, make_meta
    from mammojax.config import base_config

    config = base_config()
    config.data.dataset, config.data.task = "mias", "default"
    meta = make_meta(config)
    assert meta["class_names"] == ["normal", "abnormal"]
    checkpoint = Checkpoint(model=None, variables={}, meta=meta, path=None)
    assert checkpoint.positive_class == "abnormal"
    config.data.task = "malignant"
    assert make_meta(config)["class_names"] == ["non-malignant", "malignant"]


def test_data_summary_prints_class_names_and_what_the_task_is(tmp_path):
    from mammojax.cli.data_cmd import data

    folder = write_mias_folder(tmp_path / "mias")
    text = CliRunner().invoke(data, ["summary", "--dataset", "mias", "--data-dir", str(folder)])
    assert text.exit_code == 0, text.output
    assert "task default: abnormal (any finding, benign or malignant) vs normal" in text.output
    assert "classes     normal (0): 2  abnormal (1): 2" in text.output
    report = json.loads(CliRunner().invoke(data, ["summary", "--dataset", "mias", "--data-dir", str(folder),
                                                  "--task", "malignant", "--json"]).stdout)
    assert report["class_names"] == ["non-malignant", "malignant"]
    assert report["classes"] == {"non-malignant": 3, "malignant": 1} and report["labels"] == {"0": 3, "1": 1}
