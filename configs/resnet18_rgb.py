"""Baseline: the paper's recipe (configs/default.py) with another backbone.

ResNet-18 with the ImageNet 3-channel stem (a 1-channel image is replicated); start from converted torchvision weights with --config.model.init_checkpoint=DIR.

    mammojax train --config configs/resnet18_rgb.py --workdir runs/resnet18_rgb \
        --config.data.dataset=mias --config.data.data_dir=/path/to/all-mias
"""

import importlib.util
from pathlib import Path


def _default():
    # Load the sibling default.py by path: configs are files, not an installed package.
    spec = importlib.util.spec_from_file_location("_mammojax_config_default", Path(__file__).with_name("default.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config():
    config = _default()
    config.model.name = "resnet18_rgb"
    return config
