"""Process settings from :mod:`mammojax.runtime` (run in fresh subprocesses)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# A float16 tf.data pipeline like the training one (numpy_function -> cast -> batch).
_PIPELINE = """
import numpy as np
from mammojax import runtime
tf = runtime.import_tensorflow()
data = np.random.default_rng(0).random((8, 16, 16, 1)).astype(np.float16)
def load(i):
    image = tf.numpy_function(lambda k: data[int(k)], [i], tf.float16, stateful=False)
    return tf.cast(tf.ensure_shape(image, (16, 16, 1)), tf.float32)
ds = tf.data.Dataset.from_tensor_slices(np.arange(8)).map(load, num_parallel_calls=2).batch(4)
import os
print(sum(int(batch.shape[0]) for batch in ds.as_numpy_iterator()), os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"))
"""
_LOG_LINE = re.compile(r"^[IWEF]\d{4} ", re.MULTILINE)  # absl/TF C++ log lines


def _run_pipeline(**env_extra) -> tuple[str, str]:
    """(stderr, the TF_ENABLE_ONEDNN_OPTS that TensorFlow saw)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(env_extra)
    result = subprocess.run([sys.executable, "-c", _PIPELINE], env=env, text=True,
                            capture_output=True, timeout=180)
    count, onednn = result.stdout.split()
    assert result.returncode == 0 and count == "8", result.stderr[-2000:]
    return result.stderr, onednn


@pytest.mark.slow  # two TensorFlow imports, ~25 s on 2 cores
def test_tensorflow_through_runtime_prints_no_log_lines():
    quiet, onednn = _run_pipeline()
    # TensorFlow turns oneDNN on by itself on AVX-512 machines only; runtime
    # must turn it off everywhere, so this machine's default proves nothing.
    assert onednn == "0"
    assert not _LOG_LINE.search(quiet), quiet
    assert "oneDNN" not in quiet and "DT_HALF" not in quiet
    # With oneDNN on (the user's choice wins), the same pipeline prints the
    # lines: the checks above look at the right output.
    loud, onednn = _run_pipeline(TF_ENABLE_ONEDNN_OPTS="1")
    assert onednn == "1" and "oneDNN" in loud
