"""Record types and the load_dataset dispatcher."""

from __future__ import annotations

import dataclasses

import pytest

from mammojax.data.adapters import ADAPTERS
from mammojax.data.records import DatasetRecords, Exclusion, Lesion, Record, load_dataset
from mammojax.errors import MammojaxError


def _records():
    return DatasetRecords(
        [Record("a.png", 1, "p1", "L", "CC", lesions=(Lesion("mass", 3.0, 4.0, 2.0),), extra=(("birads", "5"),)),
         Record("b.png", 0, "p1", "R", "MLO"),
         Record("c.png", 0, "p2", None, "CC")],
        [Exclusion("d.png", "missing"), Exclusion("e.png", "missing"), Exclusion("f.png", "corrupt")])


def test_records_are_frozen_and_hashable():
    record = _records().records[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.label = 0
    assert hash(record) == hash(dataclasses.replace(record))
    assert record.get("birads") == "5" and record.get("nothing", "x") == "x"


def test_dataset_counts():
    data = _records()
    assert len(data) == 3 and data.num_patients == 2
    assert data.label_counts() == {0: 2, 1: 1}
    assert data.view_counts() == {"CC": 2, "MLO": 1}
    assert data.laterality_counts() == {"L": 1, "R": 1, "unknown": 1}
    assert data.exclusion_counts() == {"missing": 2, "corrupt": 1}
    summary = data.summary()
    assert summary["images"] == 3 and summary["excluded"] == 3 and summary["labels"] == {"0": 2, "1": 1}


def test_unknown_dataset_lists_names(tmp_path):
    with pytest.raises(MammojaxError) as err:
        load_dataset("nope", tmp_path)
    for name in ADAPTERS:
        assert name in str(err.value)


def test_missing_data_dir_is_named(tmp_path):
    missing = tmp_path / "not-here"
    with pytest.raises(MammojaxError, match="not-here"):
        load_dataset("mias", missing)
    with pytest.raises(MammojaxError, match="needs a data directory"):
        load_dataset("rsna", "")


def test_unknown_task_and_option_are_errors(tmp_path):
    with pytest.raises(MammojaxError, match="valid tasks: default, abnormal, malignant"):
        load_dataset("mias", tmp_path, task="density")
    with pytest.raises(MammojaxError, match="no option colour"):
        load_dataset("inbreast", tmp_path, colour="red")
    with pytest.raises(MammojaxError, match="no normal images"):
        load_dataset("cbis_ddsm", tmp_path, task="abnormal")
