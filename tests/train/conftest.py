"""Fixtures for the training tests (tests/conftest.py puts ``tests/`` on the path for train_support)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def cache_from_arrays(directory: Path, images: np.ndarray, labels, lesions) -> object:
    """A real prepared dataset (:mod:`mammojax.data.prepared`, on disk) holding ``images`` ``(N, H, W, 1)``."""
    from mammojax.data.preparation import write_arrays
    from mammojax.data.records import Record

    records = tuple(Record(path=str(directory / f"film{i}.png"), label=int(label), patient_id=f"p{i // 2}",
                           laterality=None, view=None) for i, label in enumerate(labels))
    return write_arrays(directory, records, images, lesions, dataset="synthetic", class_names=("normal", "lesion"))


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


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """``(workdir, result)`` of one finished ``mammojax train`` (train_support.SMALL_RUN + OPTIMIZER_RUN).

    Shared by the run-output and resume tests: read it, or copy it (shutil.copytree) before changing it.
    """
    from train_support import OPTIMIZER_RUN, run_train

    workdir = tmp_path_factory.mktemp("small_run") / "run"
    result = run_train(workdir, *OPTIMIZER_RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result


@pytest.fixture(scope="session")
def one_device_training(tmp_path_factory):
    """A future of ``train_worker.py --devices 1``'s ``.npz`` path: the one-device reference that the
    8-device and the two-process runs of the same steps are compared with, trained once for both. It
    starts at once, so the first test's own workers run beside it; ``.result()`` waits for it."""
    import concurrent.futures

    from train_support import finish, start_worker

    out = tmp_path_factory.mktemp("one_device") / "one.npz"

    def train() -> Path:
        finish(start_worker(out, "--devices", "1"))
        return out

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    yield pool.submit(train)
    pool.shutdown()
