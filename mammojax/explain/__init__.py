"""Explanations: Grad-CAM family heatmaps, overlays and localization metrics.

* :mod:`mammojax.explain.cam` - ``compute_cam`` / ``upsample_cam`` (pure JAX).
* :mod:`mammojax.explain.overlay` - colour overlays and report panels (uint8 RGB).
* :mod:`mammojax.explain.localization` - pointing game, CAM mass in the lesion,
  deletion faithfulness.
* :mod:`mammojax.explain.explain` - the library functions behind ``mammojax explain``.
"""

from __future__ import annotations

import importlib

# Exported lazily: importing the package (e.g. from the CLI, before
# mammojax.runtime.setup()) must not load JAX.
_EXPORTS = {
    "CAM_METHODS": "mammojax.explain.cam", "compute_cam": "mammojax.explain.cam",
    "make_cam_fn": "mammojax.explain.cam", "upsample_cam": "mammojax.explain.cam",
    "Explainer": "mammojax.explain.explain", "evaluate_localization": "mammojax.explain.explain",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mammojax.explain' has no attribute {name!r}")
