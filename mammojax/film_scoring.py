"""How a film becomes a score: the one description every entry point reads.

A checkpoint says how its films are scored in its ``scoring`` entry, and
:func:`film_scoring_from_meta` is the only function that reads it. Training
writes it (:meth:`FilmScoring.to_meta`) from the same config that chose the
operating point, so a film is scored at prediction time exactly as tau and
the temperature were fitted.

Two kinds:

* ``whole``: one pass of the model over the preprocessed film.
* ``windows``: the patch classifier run on ``size`` px windows of the film
  every ``stride`` px (window centres on the breast); the film's lesion margin
  is the mean of the ``top_k`` highest window margins.

``tta_hflip`` adds the film's left-right mirror: a breast seen from the other
side is still the same breast. ``cam_method`` / ``cam_layer`` are the
checkpoint's default heatmap, so the page, ``explain`` and the quickstart
draw the same map unless the user asks for another.

Checkpoints written before this entry existed are read the way they were
scored then: window settings from the old ``scoring`` entry, flip TTA from
``config.eval.tta_hflip``, the heatmap from ``config.explain``.
"""

from __future__ import annotations

import dataclasses

from mammojax.errors import CheckpointError, ConfigError

KINDS = ("whole", "windows")
DEFAULT_CAM_METHOD = "gradcam"
DEFAULT_CAM_LAYER = "stage4"


@dataclasses.dataclass(frozen=True)
class FilmScoring:
    """How films are turned into logits (frozen: a cache key for compiled programs)."""

    kind: str = "whole"
    tta_hflip: bool = False
    window_size: int = 0  # windows only: window side in model-input pixels
    window_stride: int = 0
    window_top_k: int = 0
    cam_method: str = DEFAULT_CAM_METHOD
    cam_layer: str = DEFAULT_CAM_LAYER

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"unknown film scoring {self.kind!r}; valid: {', '.join(KINDS)}")
        if self.kind == "windows" and min(self.window_size, self.window_stride, self.window_top_k) < 1:
            raise ConfigError("window scoring needs a positive window size, stride and top_k "
                              f"(got {self.window_size}, {self.window_stride}, {self.window_top_k})")

    @property
    def windows(self) -> bool:
        return self.kind == "windows"

    def replace(self, **changes) -> "FilmScoring":
        return dataclasses.replace(self, **changes)

    def to_meta(self) -> dict:
        """The checkpoint's ``scoring`` entry."""
        meta = {"kind": self.kind, "tta_hflip": bool(self.tta_hflip),
                "cam_method": self.cam_method, "cam_layer": self.cam_layer}
        if self.windows:
            meta.update(size=int(self.window_size), stride=int(self.window_stride), top_k=int(self.window_top_k))
        return meta


def film_scoring_from_config(config) -> FilmScoring:
    """The scoring a model trained with ``config`` (a ConfigDict) is evaluated with.

    ``eval.scoring = "windows"`` takes the window settings from the ``patch``
    section (the windows are the patches the classifier learned from).
    """
    kind = str(config.eval.scoring)
    if kind not in KINDS:
        raise ConfigError(f"eval.scoring must be one of {', '.join(KINDS)} (got {kind!r})")
    windows = {}
    if kind == "windows":
        windows = dict(window_size=int(config.patch.size), window_stride=int(config.patch.window_stride),
                       window_top_k=int(config.patch.window_top_k))
    return FilmScoring(kind=kind, tta_hflip=bool(config.eval.tta_hflip), cam_method=str(config.explain.method),
                       cam_layer=str(config.explain.layer), **windows)


def film_scoring_from_meta(meta: dict, *, where: str = "checkpoint") -> FilmScoring:
    """The one reader of a checkpoint's scoring (see the module docstring for old checkpoints)."""
    stored = dict(meta.get("scoring") or {})
    config = meta.get("config") or {}
    kind = stored.get("kind", "whole")
    if kind not in KINDS:
        raise CheckpointError(f"{where}: unknown film scoring {kind!r} (written by a newer mammojax?)")
    explain = config.get("explain") or {}
    tta = stored.get("tta_hflip", (config.get("eval") or {}).get("tta_hflip", False))
    windows = {}
    if kind == "windows":
        try:
            windows = dict(window_size=int(stored["size"]), window_stride=int(stored["stride"]),
                           window_top_k=int(stored["top_k"]))
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{where}: window scoring entry lacks size/stride/top_k") from None
    return FilmScoring(kind=kind, tta_hflip=bool(tta),
                       cam_method=str(stored.get("cam_method", explain.get("method", DEFAULT_CAM_METHOD))),
                       cam_layer=str(stored.get("cam_layer", explain.get("layer", DEFAULT_CAM_LAYER))),
                       **windows)
