"""Baseline: the paper's recipe (configs/default.py) with another backbone.

MobileNetV2 (1-channel stem); the fastest baseline on CPU.

    mammojax train --config configs/mobilenet_v2.py --workdir runs/mobilenet_v2 \
        --config.data.dataset=mias --config.data.data_dir=/path/to/all-mias
"""

from mammojax.config import base_config


def get_config():
    config = base_config()  # the paper's recipe, exactly as configs/default.py
    config.model.name = "mobilenet_v2"
    return config
