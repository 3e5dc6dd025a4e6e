"""Baseline: the paper's recipe (configs/default.py) with another backbone.

DenseNet-121 (1-channel stem); few parameters, slow on CPU.

    mammojax train --config configs/densenet121.py --workdir runs/densenet121 \
        --config.data.dataset=mias --config.data.data_dir=/path/to/all-mias
"""

from mammojax.config import base_config


def get_config():
    config = base_config()  # the paper's recipe, exactly as configs/default.py
    config.model.name = "densenet121"
    return config
