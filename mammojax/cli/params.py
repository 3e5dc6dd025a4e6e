"""Click parameter types shared by several commands (click only: ``--help`` stays fast)."""

from __future__ import annotations

import click


class InputShape(click.ParamType):
    """``--image-size S`` or ``HxW`` (``1024x832``): the model input, as ``(H, W)``.

    Parsed by :func:`mammojax.data.preprocess.input_shape`, the one parser of
    ``data.image_size``; ``low`` and ``high`` bound each side.
    """

    name = "S|HxW"

    def __init__(self, low: int = 8, high: int | None = None):
        self.low, self.high = low, high

    def convert(self, value, param, ctx):
        from mammojax.data.preprocess import input_shape
        from mammojax.errors import MammojaxError

        if isinstance(value, tuple):  # already parsed (a default given as a shape)
            return value
        try:
            shape = input_shape(value, name=None)  # click names the option
        except MammojaxError as err:
            self.fail(str(err), param, ctx)
        if min(shape) < self.low or (self.high is not None and max(shape) > self.high):
            bound = f"from {self.low} to {self.high}" if self.high is not None else f"at least {self.low}"
            self.fail(f"{value!r} must have each side {bound} px", param, ctx)
        return shape
