"""Synthetic phantoms: the generator and the dataset adapter."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mammojax.data.records import load_dataset
from mammojax.data.synthetic import make_phantom


def _phantom(seed, **kwargs):
    kwargs = {"size": 64, "positive": True, "laterality": "L", **kwargs}
    return make_phantom(np.random.default_rng(seed), **kwargs)


def test_phantom_is_deterministic_by_seed():
    image, mask, lesions = _phantom(5)
    again, mask_again, lesions_again = _phantom(5)
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(mask, mask_again)
    assert lesions == lesions_again
    assert not np.array_equal(image, _phantom(6)[0])


@pytest.mark.parametrize("laterality", ["L", "R"])
@pytest.mark.parametrize("view", ["CC", "MLO"])
def test_positive_lesions_lie_inside_mask_and_breast(laterality, view):
    for seed in range(6):
        image, mask, lesions = _phantom(seed, size=96, laterality=laterality, view=view)
        assert image.dtype == np.float32 and image.shape == (96, 96)
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert lesions and lesions[0].kind == "mass"
        for lesion in lesions:
            assert mask[int(lesion.row), int(lesion.col)]
            assert image[int(lesion.row), int(lesion.col)] > 0
        # The mask is within the lesions' enclosing circles.
        rows, cols = np.nonzero(mask)
        inside_any = np.zeros(rows.shape, bool)
        for lesion in lesions:
            inside_any |= np.hypot(rows - lesion.row, cols - lesion.col) <= lesion.radius + 1
        assert inside_any.all()


def test_breast_side_follows_laterality_and_negatives_are_clean():
    left, left_mask, left_lesions = _phantom(1, positive=False, laterality="L")
    right, _, _ = _phantom(1, positive=False, laterality="R")
    assert not left_mask.any() and left_lesions == []
    half = left.shape[1] // 2
    assert left[:, :half].sum() > 3 * left[:, half:].sum()
    np.testing.assert_array_equal(right, left[:, ::-1])


def test_lesion_is_a_local_bright_signal():
    """The mass is denser than the breast tissue around it (the learnable signal)."""
    contrasts = []
    for seed in range(10):
        image, mask, _ = _phantom(seed, size=128)
        ring = np.zeros_like(mask)
        rows, cols = np.nonzero(mask)
        ring[max(rows.min() - 8, 0):rows.max() + 9, max(cols.min() - 8, 0):cols.max() + 9] = True
        ring &= ~mask & (image > 0)
        contrasts.append(image[mask].mean() - image[ring].mean())
    assert np.mean(contrasts) > 0.1


def test_lesion_size_is_configurable():
    small = [_phantom(s, size=128, lesion_size=(0.05, 0.05))[2][0] for s in range(8)]
    large = [_phantom(s, size=128, lesion_size=(0.12, 0.12))[2][0] for s in range(8)]
    assert np.median([l.radius for l in small]) < np.median([l.radius for l in large])


def test_synthetic_dataset_balanced_and_written_once(tmp_path):
    data = load_dataset("synthetic", tmp_path, count=18, size=48, seed=4)
    assert len(data.records) == 18 and data.excluded == ()
    assert data.num_patients == 5  # 4 images per patient, the last one partial
    labels = [r.label for r in data.records]
    patients = {}
    for record in data.records:
        patients.setdefault(record.patient_id, set()).add(record.label)
    assert all(len(v) == 1 for v in patients.values())  # a patient's images share the label
    assert sum(next(iter(v)) for v in patients.values()) == 2  # half the patients, rounded down
    assert 0 < sum(labels) < len(labels)
    first = data.records[0]
    pixels = np.asarray(Image.open(first.path))
    assert pixels.dtype == np.uint16 and pixels.shape == (48, 48)
    for record in data.records:
        if record.label:
            lesion = record.lesions[0]
            mask = np.asarray(Image.open(lesion.mask_path)) > 0
            assert mask[int(lesion.row), int(lesion.col)]
        else:
            assert record.lesions == ()

    folder = tmp_path / "phantoms-seed4-n18-48px"
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    again = load_dataset("synthetic", tmp_path, count=18, size=48, seed=4)
    assert again == data
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp  # not rewritten
    other = load_dataset("synthetic", tmp_path, count=18, size=48, seed=5)
    assert not np.array_equal(np.asarray(Image.open(other.records[0].path)), pixels)


def test_synthetic_manifest_reads_as_csv_dataset(tmp_path):
    data = load_dataset("synthetic", tmp_path, count=8, size=32, seed=0)
    manifest = load_dataset("csv", tmp_path / "phantoms-seed0-n8-32px" / "manifest.csv")
    assert [(r.path, r.label, r.patient_id, r.laterality, r.view) for r in manifest.records] == \
        [(r.path, r.label, r.patient_id, r.laterality, r.view) for r in data.records]


def test_synthetic_default_goes_to_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    data = load_dataset("synthetic", "", count=4, size=32)
    assert data.records[0].path.startswith(str(tmp_path / "cache" / "synthetic"))


# --- full-size films as DICOM files ---------------------------------------------------


@pytest.mark.parametrize("laterality", ["L", "R"])
def test_film_is_14_bit_with_a_black_background_and_the_chest_wall_on_its_side(laterality):
    from mammojax.data.synthetic import film_pixels

    film = film_pixels(np.random.default_rng(3), (416, 320), positive=True, laterality=laterality, view="MLO")
    assert film.dtype == np.uint16 and film.shape == (416, 320)
    assert film.max() < 2**14 and film.max() > 2**13  # the breast uses the upper half of the range
    chest_wall, skin_side = (film[:, :8], film[:, -8:]) if laterality == "L" else (film[:, -8:], film[:, :8])
    assert (chest_wall > 0).mean() > 0.6 and (skin_side == 0).mean() > 0.9
    assert film[0, :].min() == 0 or film[-1, :].min() == 0  # background is exactly 0 somewhere


def test_jpeg2000_lossless_dicom_decodes_bit_exactly(tmp_path):
    pytest.importorskip("openjpeg", reason="JPEG 2000 encoding needs pylibjpeg-openjpeg (the dicom extra)")
    import pydicom

    from mammojax.data.readers import read_image
    from mammojax.data.synthetic import JPEG_2000_LOSSLESS, film_pixels, write_dicom

    film = film_pixels(np.random.default_rng(0), (208, 160), positive=False)
    path = write_dicom(tmp_path / "f.dcm", film, bits_stored=14, transfer_syntax=JPEG_2000_LOSSLESS,
                       ImageLaterality="L", ViewPosition="CC")
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == JPEG_2000_LOSSLESS and ds.Modality == "MG"
    assert path.stat().st_size < film.nbytes  # really compressed
    np.testing.assert_array_equal(ds.pixel_array, film)
    loaded = read_image(path)
    assert loaded.meta.bits_stored == 14
    np.testing.assert_allclose(loaded.pixels, film / (2**14 - 1), atol=1e-6)


def test_dicom_films_come_with_a_manifest_the_csv_adapter_reads(tmp_path):
    import pydicom

    from mammojax.data.adapters.synthetic import write_dicom_films

    manifest = write_dicom_films(tmp_path / "small", count=5, shape=(104, 80), seed=2)
    bigger = write_dicom_films(tmp_path / "big", count=6, shape=(104, 80), seed=2)
    data = load_dataset("csv", manifest)
    assert [(r.patient_id, r.laterality, r.view) for r in data.records] == [
        ("synth0000", "L", "CC"), ("synth0000", "L", "MLO"), ("synth0000", "R", "CC"),
        ("synth0000", "R", "MLO"), ("synth0001", "L", "CC")]
    for record in data.records:
        ds = pydicom.dcmread(record.path)
        assert (ds.Rows, ds.Columns, ds.BitsStored) == (104, 80, 14)
        assert (ds.ImageLaterality, ds.ViewPosition) == (record.laterality, record.view)
    # Film i depends on (seed, i) only: a bigger set starts with the same films.
    first = pydicom.dcmread(data.records[4].path).pixel_array
    np.testing.assert_array_equal(first, pydicom.dcmread(bigger.parent / "films/film_00004.dcm").pixel_array)
