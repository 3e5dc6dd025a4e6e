"""Baseline: the paper's recipe (configs/default.py) with another backbone.

ResNet-50 (bottleneck blocks, 1-channel stem); about 2.3x the compute of ResNet-18.

    mammojax train --config configs/resnet50.py --workdir runs/resnet50 \
        --config.data.dataset=mias --config.data.data_dir=/path/to/all-mias
"""

from mammojax.config import base_config


def get_config():
    config = base_config()  # the paper's recipe, exactly as configs/default.py
    config.model.name = "resnet50"
    return config
