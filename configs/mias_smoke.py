"""configs/mias.py at smoke-test sizes: the whole CV or training path in about a minute; numbers mean nothing.

    mammojax cv --config configs/mias_smoke.py --data-dir ../shared/data/mias/all-mias-dev.tar.gz \
        --workdir runs/mias_cv_smoke

32 px films cut into 32 px patches (a patch is the whole film), 2 epochs with
mining in the second, no flip TTA, 20 bootstrap resamples.
"""

from pathlib import Path

from mammojax.config import load_config


def get_config():
    config = load_config(Path(__file__).with_name("mias.py"))
    config.data.image_size = 32
    config.patch.size = 32
    config.train.epochs = 2
    config.patch.hard_negative_start = 0.5  # the second epoch mines
    config.patch.window_stride = 16
    config.patch.positives_per_lesion = 1
    config.eval.bootstrap = 20
    config.eval.tta_hflip = False
    return config
