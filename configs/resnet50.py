"""Baseline: the paper's recipe (configs/default.py) with another backbone.

ResNet-50 (bottleneck blocks, 1-channel stem); about 2.3x the compute of ResNet-18.

    mammojax train --config configs/resnet50.py --workdir runs/resnet50 \
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
    config.model.name = "resnet50"
    return config
