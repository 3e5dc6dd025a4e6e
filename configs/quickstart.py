"""A few-minute run on built-in synthetic phantoms: checks an install end to end.

    mammojax train --config configs/quickstart.py --workdir runs/qs
    mammojax quickstart --workdir runs/quickstart   # train + eval + Grad-CAM

The settings live in mammojax.config.quickstart_config so that `mammojax
quickstart` works from any directory; this file is the same recipe for
`mammojax train`. Figures: see the README's quickstart section.
"""

from mammojax.config import quickstart_config


def get_config():
    return quickstart_config()
