"""Baseline: the paper's recipe (configs/default.py) with another backbone.

ResNet-18 with the ImageNet 3-channel stem (a 1-channel image is replicated); start from converted torchvision weights with --config.model.init_checkpoint=DIR.

    mammojax train --config configs/resnet18_rgb.py --workdir runs/resnet18_rgb \
        --config.data.dataset=mias --config.data.data_dir=/path/to/all-mias
"""

from mammojax.config import base_config


def get_config():
    config = base_config()  # the paper's recipe, exactly as configs/default.py
    config.model.name = "resnet18_rgb"
    return config
