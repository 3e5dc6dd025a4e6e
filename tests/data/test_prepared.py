"""Prepared datasets: a standard TFDS dataset, decoded once, restartable, incremental, parallel."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from mammojax.data import preparation, screening
from mammojax.data.prepared import PixelOptions, open_prepared
from mammojax.data.preparation import prepare_dataset
from mammojax.data.preprocess import preprocess_image
from mammojax.data.readers import read_image
from mammojax.data.records import Lesion, Record
from mammojax.errors import MammojaxError
from paths import REPO

SIZE = 32
CLASSES = ("negative", "positive")


def write_png(path, seed, shape=(48, 40)):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
    pixels[: shape[0] // 2, : shape[1] // 3] = 255  # a bright block: not just noise
    Image.fromarray(pixels).save(path)
    return path


def make_records(folder, count, start=0):
    folder.mkdir(exist_ok=True)
    out = []
    for i in range(start, start + count):
        path = write_png(folder / f"img{i}.png", seed=i)
        lesions = (Lesion("mass", row=12.0, col=8.0, radius=6.0),) if i % 2 else ()
        out.append(Record(str(path), label=i % 2, patient_id=f"p{i // 2}", laterality="L",
                          view="CC", lesions=lesions, extra=(("tissue", "F"),)))
    return out


def prepare(records, out, *, shape=(SIZE, SIZE), workers=1, **kwargs):
    return prepare_dataset(records, out, dataset="csv", class_names=CLASSES,
                           options=PixelOptions(image_shape=shape, **kwargs), workers=workers, progress=False)


@pytest.fixture
def records(tmp_path):
    return make_records(tmp_path / "images", 6)


@pytest.fixture
def count_decodes(monkeypatch):
    """Counts the files the preparation opens (workers=1 decodes in this process)."""
    calls = []
    original = screening.screen_image

    def counting(path, **kwargs):
        calls.append(str(path))
        return original(path, **kwargs)

    monkeypatch.setattr(screening, "screen_image", counting)
    return calls


def test_a_prepared_dataset_holds_the_preprocessed_images_and_every_record_field(tmp_path, records):
    prepared, report = prepare(records, tmp_path / "out")
    assert (report.examples, report.decoded, report.reused, report.excluded) == (6, 6, 0, 0)
    assert prepared.image_shape == (SIZE, SIZE) and prepared.class_names == CLASSES
    images, labels = prepared.load_arrays()
    assert images.shape == (6, SIZE, SIZE, 1) and images.dtype == np.float32
    np.testing.assert_array_equal(labels, [0, 1, 0, 1, 0, 1])
    for record, image in zip(records, images):
        expected = preprocess_image(read_image(record.path).pixels, image_size=SIZE).image
        np.testing.assert_allclose(image, expected, rtol=2**-10, atol=1e-3)  # float16 storage
    assert prepared.records == tuple(records)
    geometry = preprocess_image(read_image(records[1].path).pixels, image_size=SIZE).geometry
    (lesion,) = prepared.lesions_input[1]
    assert (lesion["row"], lesion["col"]) == pytest.approx(geometry.to_input(12.0, 8.0))
    assert prepared.lesions_input[0] == ()


def test_any_tfds_reader_opens_it_by_index(tmp_path, records):
    import tensorflow_datasets as tfds

    prepared, _ = prepare(records, tmp_path / "out", shape=(SIZE, 24))
    builder = tfds.builder_from_directory(str(tmp_path / "out"))
    assert builder.info.features["label"].names == list(CLASSES)
    assert builder.info.splits["full"].num_examples == 6
    source = builder.as_data_source("full")
    example = source[3]
    assert example["image"].shape == (SIZE, 24, 1) and example["image"].dtype == np.float16
    assert example["label"] == 1 and example["patient_id"] == b"p1" and example["laterality"] == b"L"
    np.testing.assert_array_equal(example["image"], prepared.reader().get(3))
    assert example["lesions"]["kind"] == [b"mass"]


def test_a_second_run_decodes_nothing_and_added_files_only_are_decoded(tmp_path, records, count_decodes):
    first, _ = prepare(records, tmp_path / "out")
    assert len(count_decodes) == 6
    again, report = prepare(records, tmp_path / "out")
    assert len(count_decodes) == 6 and (report.decoded, report.reused) == (0, 6)
    np.testing.assert_array_equal(again.load_arrays()[0], first.load_arrays()[0])
    grown = records + make_records(tmp_path / "images", 3, start=6)
    bigger, report = prepare(grown, tmp_path / "out")
    assert len(count_decodes) == 9 and (report.decoded, report.reused) == (3, 6)
    assert bigger.records == tuple(grown)
    np.testing.assert_array_equal(bigger.load_arrays()[0][:6], first.load_arrays()[0])


def test_a_changed_file_is_decoded_again_and_its_old_example_dropped(tmp_path, records, count_decodes):
    prepare(records, tmp_path / "out")
    write_png(records[2].path, seed=99)
    stat = os.stat(records[2].path)
    os.utime(records[2].path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    prepared, report = prepare(records, tmp_path / "out")
    assert (report.decoded, report.dropped, prepared.num_examples) == (1, 1, 6)
    expected = preprocess_image(read_image(records[2].path).pixels, image_size=SIZE).image
    np.testing.assert_allclose(prepared.read([2])[0], expected, rtol=2**-10, atol=1e-3)
    removed, report = prepare(records[:4], tmp_path / "out")
    assert removed.num_examples == 4 and report.decoded == 0 and report.dropped == 2


def test_other_pixel_options_or_a_foreign_folder_are_refused_untouched(tmp_path, records):
    prepare(records, tmp_path / "out")
    with pytest.raises(MammojaxError, match="prepared differently.*image_shape"):
        prepare(records, tmp_path / "out", shape=(SIZE + 8, SIZE))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(MammojaxError, match="not empty and not a mammojax prepared dataset"):
        prepare(records, foreign)
    assert os.listdir(foreign) == ["notes.txt"]


def test_bad_files_are_excluded_with_reasons_and_never_stop_the_run(tmp_path, records):
    broken = tmp_path / "images" / "truncated.png"
    broken.write_bytes((tmp_path / "images" / "img0.png").read_bytes()[:60])
    text = tmp_path / "images" / "notes.png"
    text.write_text("not an image")
    flat = tmp_path / "images" / "flat.png"
    Image.fromarray(np.full((40, 40), 7, np.uint8)).save(flat)
    missing = tmp_path / "images" / "missing.png"
    bad = [Record(str(p), 1, "bad") for p in (broken, text, flat, missing)]
    mixed = [records[0], bad[0], records[1], bad[1], bad[2], bad[3], records[2]]
    prepared, report = prepare(mixed, tmp_path / "out")
    assert [r.path for r in prepared.records] == [records[i].path for i in range(3)]
    assert [e.path for e in prepared.excluded] == [str(p) for p in (broken, text, flat, missing)]
    assert report.excluded == 4 and "constant" in prepared.excluded[2].reason
    assert open_prepared(prepared.path).excluded == prepared.excluded
    with pytest.raises(MammojaxError, match="could not read any of the 1 images"):
        prepare([bad[3]], tmp_path / "empty")


def test_two_workers_write_the_same_dataset_as_one(tmp_path, records):
    more = records + make_records(tmp_path / "images", 10, start=6)
    one, _ = prepare(more, tmp_path / "one", workers=1)
    two, report = prepare(more, tmp_path / "two", workers=2)
    assert report.decoded == 16 and two.records == one.records
    np.testing.assert_array_equal(two.load_arrays()[0], one.load_arrays()[0])
    assert len(list((tmp_path / "two").glob("mammojax_csv-full.array_record-*"))) > 1


def test_views_read_their_own_rows(tmp_path, records):
    prepared, _ = prepare(records, tmp_path / "out")
    everything = prepared.load_arrays()[0]
    view = prepared.subset([4, 1]).subset([1])
    np.testing.assert_array_equal(view.read([0])[0], everything[1])
    assert prepared.select([records[5], records[0]]).labels.tolist() == [1, 0]


def _big_manifest(folder, count):
    """PNG films large enough that decoding them takes a few seconds in all."""
    folder.mkdir()
    lines = ["path,label,patient_id"]
    for i in range(count):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 65535, size=(1400, 1100), dtype=np.uint16)).save(folder / f"f{i}.png")
        lines.append(f"f{i}.png,{i % 2},w{i}")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return folder / "manifest.csv"


@pytest.mark.slow
def test_a_preparation_killed_midway_redoes_only_unfinished_files(tmp_path):
    manifest = _big_manifest(tmp_path / "raw", 24)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "mammojax", "data", "prepare", "--dataset", "csv", "--data-dir",
               str(manifest), "--out", str(out), "--image-size", "64x48", "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store = out / preparation.WORK_DIR
    deadline = time.time() + 120
    while time.time() < deadline and not list(store.glob("chunk-*.json")):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_before = len(list(store.glob("chunk-*.json")))
    assert 0 < finished_before < 8, "the kill must land between the first and the last chunk"
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    summary = next(line for line in rerun.stderr.splitlines() if line.startswith("prepared "))
    decoded = int(summary.split(" decoded")[0].rsplit("(", 1)[1])
    reused = int(summary.split(" reused")[0].rsplit(", ", 1)[1])
    assert decoded + reused == 24 and reused >= 3 * finished_before and decoded < 24
    assert rerun.stdout.strip().splitlines()[-1] == str(out)
    whole, _ = prepare_dataset([r for r in open_prepared(out).records], tmp_path / "fresh", dataset="csv",
                               class_names=CLASSES, options=PixelOptions(image_shape=(64, 48)), workers=1,
                               progress=False)
    np.testing.assert_array_equal(open_prepared(out).load_arrays()[0], whole.load_arrays()[0])
