"""The decode-once cache: contents, reuse, invalidation, bad files, atomicity."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from mammojax.data import cache as cache_lib
from mammojax.data import screening
from mammojax.data.cache import open_cache, prepare_cache
from mammojax.data.preprocess import preprocess_image
from mammojax.data.readers import read_image
from mammojax.data.records import Lesion, Record
from mammojax.errors import MammojaxError

SIZE = 32


def write_png(path, seed, shape=(48, 40)):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
    pixels[: shape[0] // 2, : shape[1] // 3] = 255  # a bright block: not just noise
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def records(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    out = []
    for i in range(6):
        path = write_png(folder / f"img{i}.png", seed=i)
        lesions = (Lesion("mass", row=12.0, col=8.0, radius=6.0),) if i % 2 else ()
        out.append(Record(str(path), label=i % 2, patient_id=f"p{i // 2}", laterality="L",
                          view="CC", lesions=lesions, extra=(("tissue", "F"),)))
    return out


@pytest.fixture
def count_decodes(monkeypatch):
    """Counts calls of the screening reader that the cache decodes through."""
    calls = []
    original = screening.screen_image

    def counting(path, **kwargs):
        calls.append(str(path))
        return original(path, **kwargs)

    monkeypatch.setattr(screening, "screen_image", counting)
    return calls


def test_cache_holds_the_preprocessed_images(tmp_path, records):
    cache = prepare_cache(records, cache_dir=tmp_path / "cache", image_size=SIZE, progress=False)
    assert cache.num_examples == 6 and cache.image_size == SIZE and not cache.excluded
    images, labels = cache.load_arrays()
    assert images.shape == (6, SIZE, SIZE, 1) and images.dtype == np.float32
    np.testing.assert_array_equal(labels, [0, 1, 0, 1, 0, 1])
    assert cache.patient_ids == ("p0", "p0", "p1", "p1", "p2", "p2")
    for record, image in zip(records, images):
        expected = preprocess_image(read_image(record.path).pixels, image_size=SIZE).image
        # float16 storage: relative error at most 2**-11.
        np.testing.assert_allclose(image, expected, rtol=2**-10, atol=1e-3)
    assert cache.records == tuple(records)  # every field survives the JSON index


def test_lesions_are_mapped_into_input_coordinates(tmp_path, records):
    cache = prepare_cache(records, cache_dir=tmp_path / "cache", image_size=SIZE, progress=False)
    geometry = preprocess_image(read_image(records[1].path).pixels, image_size=SIZE).geometry
    (lesion,) = cache.lesions_input[1]
    assert (lesion["row"], lesion["col"]) == pytest.approx(geometry.to_input(12.0, 8.0))
    assert lesion["radius"] == pytest.approx(6.0 * SIZE / 48, rel=0.05)
    assert cache.lesions_input[0] == ()


def test_second_call_reuses_the_cache_without_decoding(tmp_path, records, count_decodes):
    first = prepare_cache(records, cache_dir=tmp_path / "cache", image_size=SIZE, progress=False)
    assert len(count_decodes) == 6
    second = prepare_cache(records, cache_dir=tmp_path / "cache", image_size=SIZE, progress=False)
    assert len(count_decodes) == 6  # nothing decoded again
    assert second.path == first.path
    np.testing.assert_array_equal(second.load_arrays()[0], first.load_arrays()[0])


def test_changed_options_or_files_make_a_new_cache(tmp_path, records, count_decodes):
    base = prepare_cache(records, cache_dir=tmp_path / "cache", image_size=SIZE, progress=False)
    other_size = prepare_cache(records, cache_dir=tmp_path / "cache", image_size=SIZE + 8, progress=False)
    oriented = prepare_cache(records, cache_dir=tmp_path / "cache", image_size=SIZE, orient=True,
                             progress=False)
    stat = os.stat(records[0].path)
    os.utime(records[0].path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    touched = prepare_cache(records, cache_dir=tmp_path / "cache", image_size=SIZE, progress=False)
    relabelled = [Record(r.path, 1 - r.label, r.patient_id) for r in records]
    relabelled_cache = prepare_cache(relabelled, cache_dir=tmp_path / "cache", image_size=SIZE,
                                     progress=False)
    paths = {c.path for c in (base, other_size, oriented, touched, relabelled_cache)}
    assert len(paths) == 5
    assert other_size.image_size == SIZE + 8
    assert len(count_decodes) == 5 * 6


def test_bad_files_are_excluded_with_reasons(tmp_path, records):
    broken = tmp_path / "images" / "truncated.png"
    broken.write_bytes((tmp_path / "images" / "img0.png").read_bytes()[:60])
    text = tmp_path / "images" / "notes.png"
    text.write_text("not an image")
    flat = tmp_path / "images" / "flat.png"
    Image.fromarray(np.full((40, 40), 7, np.uint8)).save(flat)
    missing = tmp_path / "images" / "missing.png"
    bad = [Record(str(p), 1, "bad") for p in (broken, text, flat, missing)]
    mixed = [records[0], bad[0], records[1], bad[1], bad[2], bad[3], records[2]]
    cache = prepare_cache(mixed, cache_dir=tmp_path / "cache", image_size=SIZE, progress=False)
    assert [r.path for r in cache.records] == [records[i].path for i in range(3)]
    assert [e.path for e in cache.excluded] == [str(p) for p in (broken, text, flat, missing)]
    assert all(e.reason for e in cache.excluded)
    assert "constant" in cache.excluded[2].reason
    reopened = open_cache(cache.path)
    assert reopened.excluded == cache.excluded


def test_leftover_temporary_directory_is_ignored(tmp_path, records):
    options = {"image_size": SIZE, "orient": False, "crop_breast": False, "max_pixels": 80_000_000}
    fingerprint = cache_lib.cache_fingerprint(records, options)
    stale = tmp_path / "cache" / f".tmp-{fingerprint}-999-deadbeef"
    stale.mkdir(parents=True)
    (stale / "index.json").write_text(json.dumps({"version": 1, "examples": []}))
    cache = prepare_cache(records, cache_dir=tmp_path / "cache", image_size=SIZE, progress=False)
    assert cache.path.name == fingerprint and cache.num_examples == 6


def test_interrupted_prepare_leaves_no_cache_behind(tmp_path, records, monkeypatch):
    decoded = []
    real = cache_lib._decode_one

    def dies_on_the_fourth(record, options):
        if len(decoded) == 3:
            raise KeyboardInterrupt
        decoded.append(record.path)
        return real(record, options)

    monkeypatch.setattr(cache_lib, "_decode_one", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        prepare_cache(records, cache_dir=tmp_path / "cache", image_size=SIZE, progress=False, workers=1)
    assert list((tmp_path / "cache").iterdir()) == []  # no half cache, no temporary left
    monkeypatch.setattr(cache_lib, "_decode_one", real)
    cache = prepare_cache(records, cache_dir=tmp_path / "cache", image_size=SIZE, progress=False)
    assert cache.num_examples == 6


def test_shards_keep_example_order(tmp_path, records, monkeypatch):
    monkeypatch.setattr(cache_lib, "SHARD_BYTES", 2 * SIZE * SIZE * 2)  # two images per shard
    sharded = prepare_cache(records, cache_dir=tmp_path / "a", image_size=SIZE, progress=False)
    monkeypatch.undo()
    single = prepare_cache(records, cache_dir=tmp_path / "b", image_size=SIZE, progress=False)
    assert [count for _, count in sharded.shards] == [2, 2, 2] and len(single.shards) == 1
    np.testing.assert_array_equal(sharded.load_arrays()[0], single.load_arrays()[0])
    reader = cache_lib.ExampleReader(sharded)
    np.testing.assert_array_equal(reader.get_slice(1, 5), single.load_arrays()[0][1:5].astype(np.float16))
    np.testing.assert_array_equal(sharded.read([5, 0, 3]), single.load_arrays()[0][[5, 0, 3]])


def test_a_damaged_shard_is_a_clear_error(tmp_path, records):
    cache = prepare_cache(records, cache_dir=tmp_path / "cache", image_size=SIZE, progress=False)
    shard = cache.path / cache.shards[0][0]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(MammojaxError, match="damaged cache shard"):
        open_cache(cache.path).load_arrays()


def test_no_usable_records_gives_an_empty_cache(tmp_path):
    cache = prepare_cache([Record(str(tmp_path / "gone.png"), 0, "p")], cache_dir=tmp_path / "cache",
                          image_size=SIZE, progress=False)
    assert cache.num_examples == 0 and len(cache.excluded) == 1
    images, labels = cache.load_arrays()
    assert images.shape == (0, SIZE, SIZE, 1) and labels.shape == (0,)
