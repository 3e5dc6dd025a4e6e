"""The Beam runner: the same chunk function as the local runner, so the same prepared dataset."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from mammojax.data.preparation import prepare_dataset
from mammojax.data.preparation_beam import pipeline_args
from mammojax.data.prepared import PixelOptions
from mammojax.data.records import Record
from mammojax.errors import MammojaxError
from test_prepared import CLASSES, SIZE, make_records  # the same small PNG films as the local runner's tests


def prepare(records, out, **kwargs):
    return prepare_dataset(records, out, dataset="csv", class_names=CLASSES,
                           options=PixelOptions(image_shape=(SIZE, SIZE)), progress=False, **kwargs)


def examples(path):
    """Every example of a prepared dataset as any TFDS reader sees it."""
    import tensorflow_datasets as tfds

    source = tfds.builder_from_directory(str(path)).as_data_source("full")
    return [source[i] for i in range(len(source))]


def assert_same_example(got, want, where=""):
    if isinstance(want, dict):
        assert got.keys() == want.keys(), where
        for key in want:
            assert_same_example(got[key], want[key], f"{where}/{key}")
    else:
        np.testing.assert_array_equal(got, want, err_msg=where)


def test_beam_direct_runner_with_two_workers_writes_what_the_local_runner_writes(tmp_path):
    pytest.importorskip("apache_beam")
    records = make_records(tmp_path / "images", 12)
    broken = tmp_path / "images" / "truncated.png"
    broken.write_bytes((tmp_path / "images" / "img0.png").read_bytes()[:60])
    records.insert(5, Record(str(broken), 1, "bad"))
    local, _ = prepare(records, tmp_path / "local", workers=1)
    beamed, report = prepare(records, tmp_path / "beam", workers=2, runner="beam")
    assert (report.decoded, report.examples, report.excluded) == (13, 12, 1)
    assert beamed.records == local.records and beamed.lesions_input == local.lesions_input
    assert [(e.path, e.reason) for e in beamed.excluded] == [(str(broken), local.excluded[0].reason)]
    np.testing.assert_array_equal(beamed.load_arrays()[0], local.load_arrays()[0])
    np.testing.assert_array_equal(beamed.load_arrays()[1], local.load_arrays()[1])
    got, want = examples(tmp_path / "beam"), examples(tmp_path / "local")
    assert len(got) == len(want) == 12
    for i, (a, b) in enumerate(zip(got, want)):
        assert_same_example(a, b, where=f"example {i}")
    assert len(list((tmp_path / "beam").glob("mammojax_csv-full.array_record-*"))) > 2  # work to share
    again, report = prepare(records, tmp_path / "beam", workers=2, runner="beam")
    assert (report.decoded, report.reused) == (0, 13)  # restartable and incremental like the local runner


def test_without_beam_the_beam_runner_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "apache_beam", None)  # as if not installed
    records = make_records(tmp_path / "images", 2)
    with pytest.raises(MammojaxError, match=r"--runner beam needs Apache Beam.*mammojax\[beam\]"):
        prepare(records, tmp_path / "out", workers=1, runner="beam")


def test_local_defaults_are_added_and_whatever_the_user_set_is_kept():
    assert pipeline_args([], workers=3) == [
        "--runner=DirectRunner", "--direct_num_workers=3", "--direct_running_mode=multi_processing",
        "--default_sdk_harness_log_level=WARNING"]
    assert pipeline_args(["--direct_running_mode=multi_threading --default_sdk_harness_log_level=INFO"],
                         workers=1) == [
        "--direct_running_mode=multi_threading", "--default_sdk_harness_log_level=INFO",
        "--runner=DirectRunner", "--direct_num_workers=1"]
    cluster = ["--runner FlinkRunner --flink_master=host:8081", "--environment_type=PROCESS"]
    assert pipeline_args(cluster, workers=8) == [
        "--runner", "FlinkRunner", "--flink_master=host:8081", "--environment_type=PROCESS"]
