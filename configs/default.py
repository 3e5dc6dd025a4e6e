"""The paper's recipe: 1-channel ResNet-18, Adam 1e-4, cross-entropy, 224 px, batch 16, 30 epochs.

    mammojax train --config configs/default.py --workdir runs/mias \
        --config.data.dataset=mias --config.data.data_dir=/path/to/all-mias

Runtime: a training step at batch 16, 224x224 runs at about 4.3 images/s on a
2-core CPU (shared/docs/PERFORMANCE.md), so 30 epochs over mini-MIAS's ~230
training images take about half an hour there; minutes on one GPU.
"""

from mammojax.config import base_config


def get_config():
    config = base_config()
    config.model.name = "resnet18"  # 1-channel stem: mammograms are grayscale
    config.optim.name = "adam"
    config.optim.lr = 1e-4
    config.data.image_size = 224
    config.train.batch_size = 16
    config.train.epochs = 30
    return config
