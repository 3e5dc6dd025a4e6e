"""Fixtures for the training tests; ``tests/`` itself is put on the path for its helper modules."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # train_support, train_worker: shared with the tests beside the package


def cache_from_arrays(directory: Path, images: np.ndarray, labels, lesions) -> object:
    """A real :class:`mammojax.data.cache.Cache` (a float16 shard on disk) holding ``images`` ``(N, S, S, 1)``."""
    from mammojax.data.cache import STORAGE_DTYPE, Cache
    from mammojax.data.records import Record

    directory.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(images, STORAGE_DTYPE).tofile(directory / "images-00000.f16")
    records = tuple(Record(path=str(directory / f"film{i}.png"), label=int(label), patient_id=f"p{i // 2}",
                           laterality=None, view=None) for i, label in enumerate(labels))
    return Cache(path=directory, image_size=int(images.shape[1]), records=records,
                 labels=np.asarray(labels, np.int32), patient_ids=tuple(r.patient_id for r in records),
                 lesions_input=tuple(tuple(l) for l in lesions), excluded=(),
                 shards=(("images-00000.f16", len(images)),), fingerprint="test")


@pytest.fixture
def make_cache(tmp_path):
    """``make_cache(images, labels, lesions)``: :func:`cache_from_arrays` in a fresh folder."""
    count = iter(range(1000))
    return lambda images, labels, lesions: cache_from_arrays(tmp_path / f"cache{next(count)}", images, labels,
                                                              lesions)


@pytest.fixture
def phantom_cache(make_cache):
    """Two 64 px films: a bright disc lesion at (40, 20) on film 0 (abnormal), film 1 flat breast (normal)."""
    images = np.full((2, 64, 64, 1), -1.0, np.float32)
    images[:, :, :48] = 0.0  # breast on the left, background right
    rows, cols = np.mgrid[:64, :64]
    images[0, (rows - 40) ** 2 + (cols - 20) ** 2 < 16, 0] = 5.0
    lesions = [({"kind": "mass", "row": 40.0, "col": 20.0, "radius": 4.0, "severity": None},), ()]
    return make_cache(images, [1, 0], lesions)
