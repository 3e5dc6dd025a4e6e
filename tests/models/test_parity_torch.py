"""Converted torchvision-layout weights give PyTorch's logits (float32, eval mode)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import torch_reference  # noqa: E402
from mammojax import models, weights  # noqa: E402

# (model, torch constructor, classes): resnet18 is the 1-channel model fed
# 3-channel weights (stem summed over RGB) with a 2-class head.
CASES = [
    ("resnet18", torch_reference.resnet18, 2),
    ("resnet50", torch_reference.resnet50, 1000),
    ("densenet121", torch_reference.densenet121, 1000),
    ("mobilenet_v2", torch_reference.mobilenet_v2, 1000),
]


@pytest.mark.torch
@pytest.mark.parametrize("name,constructor,num_classes", CASES, ids=[c[0] for c in CASES])
def test_logits_match_torch(tmp_path, name, constructor, num_classes):
    torch.manual_seed(0)
    reference = constructor(num_classes=num_classes)
    torch_reference.randomize_batchnorm(reference, torch.Generator().manual_seed(1)).eval()
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))

    converted = weights.convert_state_dict(weights.load_state_dict(path), name,
                                           num_classes=num_classes)
    model = models.create_model(name, num_classes=num_classes)
    grey = np.random.default_rng(0).normal(size=(2, 64, 64, 1)).astype(np.float32)
    logits, _ = jax.jit(lambda v, x: model.apply(v, x))(converted.variables, grey)
    with torch.no_grad():
        # The 1-channel Flax model with the summed stem equals the RGB network
        # on the grey image replicated to three channels.
        expected = reference(torch.from_numpy(np.repeat(grey, 3, axis=-1).transpose(0, 3, 1, 2)))
    expected = expected.numpy()
    scale = np.abs(expected).max()
    assert scale > 1e-2  # the comparison is not between two near-zero outputs
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4, atol=1e-5 * scale)
    assert any("summed the RGB stem" in note for note in converted.notes)
