"""Baseline: the paper's recipe (configs/default.py) with another backbone.

DenseNet-121 (1-channel stem); few parameters, slow on CPU.

    mammojax train --config configs/densenet121.py --workdir runs/densenet121 \
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
    config.model.name = "densenet121"
    return config
