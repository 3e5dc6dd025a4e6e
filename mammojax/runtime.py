"""Process-wide settings that must be in place before JAX or TensorFlow load.

Call :func:`setup` first thing in any entry point that will import JAX. It

* applies the XLA CPU flags measured faster on this CPU
  (``mammojax.platform.default_xla_flags``) unless the user set those flags in
  ``XLA_FLAGS`` themselves or ``MAMMOJAX_XLA_DEFAULTS=0``;
* keeps TensorFlow (used only for tf.data) off every GPU, so it never takes
  accelerator memory from JAX, and quiet: no INFO/WARNING lines, no oneDNN
  notices (see ``TF_QUIET_DEFAULTS``); its real errors still print;
* turns on JAX's persistent compilation cache, so repeated CLI runs do not
  recompile.
"""

from __future__ import annotations

import os
from pathlib import Path

from mammojax import platform

# TensorFlow runs only the tf.data input pipeline here. On CPUs where it turns
# its oneDNN ops on (AVX-512 machines), it prints "I0000 ... oneDNN custom
# operations are on" and, for our float16 cache, "E0000 ... oneDNN supports
# DT_HALF only on platforms with AVX-512" on every run. absl writes those
# before TF_CPP_MIN_LOG_LEVEL applies, so the level alone does not hide them;
# oneDNN off does, and costs nothing: the pipeline has no convolution or
# matmul for oneDNN to speed up. TF_CPP_MIN_LOG_LEVEL=2 hides INFO and
# WARNING and keeps ERROR. Environment values set by the user win.
TF_QUIET_DEFAULTS = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}

_flags_done = False
_cache_done = False


def default_cache_dir() -> Path:
    base = os.environ.get("MAMMOJAX_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "mammojax")
    return Path(base)


def setup(*, compilation_cache: bool = True) -> None:
    """Idempotent; call before JAX loads (the XLA flags are read at import)."""
    global _flags_done, _cache_done
    if not _flags_done:
        _flags_done = True
        if os.environ.get("MAMMOJAX_XLA_DEFAULTS", "1") != "0":
            flags = os.environ.get("XLA_FLAGS", "")
            # Per CPU, from platform.MEASURED: e.g. jaxlib 0.10's YNNPACK convolution
            # fusions ran at half speed on AVX2 (batch-1 ResNet-18 predict 148 ms -> 63 ms
            # with the fusion list emptied). A default, not a rule: your XLA_FLAGS win.
            for flag in platform.default_xla_flags():
                key = flag.split("=")[0]
                if key not in flags:
                    flags = f"{flags} {flag}".strip()
            os.environ["XLA_FLAGS"] = flags
        for name, value in TF_QUIET_DEFAULTS.items():  # read when TensorFlow loads
            os.environ.setdefault(name, value)
    # Tracked apart from the flags: an early setup(compilation_cache=False)
    # (importing TensorFlow for tf.data) must not switch the cache off for good.
    if compilation_cache and not _cache_done and os.environ.get("MAMMOJAX_COMPILATION_CACHE", "1") != "0":
        _cache_done = True
        import jax

        cache = default_cache_dir() / "xla"
        try:
            cache.mkdir(parents=True, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", str(cache))
            # Cache even quick compiles: CLI runs are short and repeat.
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        except OSError:
            pass  # a read-only home only costs us recompiles


def import_tensorflow():
    """Import TensorFlow for tf.data with every GPU hidden from it."""
    setup(compilation_cache=False)
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        pass  # already initialised: devices were set earlier in this process
    return tf
