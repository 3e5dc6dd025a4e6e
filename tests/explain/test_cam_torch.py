"""Grad-CAM in JAX against a PyTorch hooks-based Grad-CAM on the same weights.

The PyTorch side is written the usual way: a forward hook on ``layer4`` keeps
the activations and registers a tensor hook that keeps their gradient. The
reference ResNet here uses torchvision's module names and is converted to
Flax by name, so the two sides share every weight and running statistic.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from mammojax import models  # noqa: E402
from mammojax.explain.cam import compute_cam, upsample_cam  # noqa: E402

SIZE = 96  # layer4 is 3x3


class TorchBasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class TorchResNet(nn.Module):
    """torchvision's ResNet (BasicBlock) layout with a 1-channel stem."""

    def __init__(self, stage_sizes, num_classes=2, in_channels=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for stage, blocks in enumerate(stage_sizes):
            cout = 64 * 2**stage
            layers = []
            for index in range(blocks):
                layers.append(TorchBasicBlock(cin, cout, 2 if stage > 0 and index == 0 else 1))
                cin = cout
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def randomize(module: nn.Module, seed: int) -> None:
    """Random running statistics and BN affine terms: eval mode must use them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=generator)
                m.running_var.uniform_(0.5, 1.5, generator=generator)
                m.weight.uniform_(0.5, 1.5, generator=generator)
                m.bias.normal_(0, 0.1, generator=generator)


def to_flax(state_dict) -> dict:
    """torchvision ResNet state dict -> mammojax variables (names mapped by rule)."""
    params, stats = {}, {}
    sd = {k: v.detach().numpy() for k, v in state_dict.items()}

    def module_name(prefix: str) -> str:
        # layer2.0.downsample.0 -> layer2_0/downsample_conv
        parts = prefix.split(".")
        if parts[0].startswith("layer"):
            block = f"{parts[0]}_{parts[1]}"
            rest = parts[2:]
            if rest[0] == "downsample":
                rest = ["downsample_conv" if rest[1] == "0" else "downsample_bn"]
            return "/".join([block, *rest])
        return "head" if parts[0] == "fc" else parts[0]

    def put(tree, path, key, value):
        node = tree
        for part in path.split("/"):
            node = node.setdefault(part, {})
        node[key] = value

    for name, value in sd.items():
        prefix, leaf = name.rsplit(".", 1)
        path = module_name(prefix)
        if leaf == "num_batches_tracked":
            continue
        if value.ndim == 4:
            put(params, path, "kernel", value.transpose(2, 3, 1, 0))
        elif path == "head":
            put(params, path, "kernel" if leaf == "weight" else "bias", value.T if leaf == "weight" else value)
        elif leaf in ("weight", "bias"):
            put(params, path, "scale" if leaf == "weight" else "bias", value)
        else:
            put(stats, path, "mean" if leaf == "running_mean" else "var", value)
    return {"params": params, "batch_stats": stats}


def convert(state_dict, model_name: str) -> dict:
    """Through mammojax.weights (the product's converter); the rule above if it is absent."""
    try:
        from mammojax.weights import convert_state_dict
    except ImportError:
        return to_flax(state_dict)
    arrays = {k: v.detach().numpy() for k, v in state_dict.items()}
    converted = convert_state_dict(arrays, model_name).variables
    # The two conversions must agree leaf for leaf.
    for ours, theirs in zip(jax.tree.leaves(to_flax(state_dict)), jax.tree.leaves(converted)):
        np.testing.assert_array_equal(ours, theirs)
    return converted


def torch_cam(model: nn.Module, images: np.ndarray, method: str, target: int = 1):
    """Hooks-based Grad-CAM family on ``layer4`` (PyTorch, NCHW)."""
    saved = {}

    def keep(module, inputs, output):
        saved["activations"] = output
        output.register_hook(lambda grad: saved.__setitem__("grads", grad))

    handle = model.layer4.register_forward_hook(keep)
    try:
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        logits = model(x)
        model.zero_grad()
        logits[:, target].sum().backward()
    finally:
        handle.remove()
    a = saved["activations"].detach().double()
    g = saved["grads"].double()
    if method == "gradcam":
        maps = torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))
    elif method == "hirescam":
        maps = torch.relu((g * a).sum(1))
    else:  # gradcam++: alpha = g^2 / (2 g^2 + sum(A) g^3), weights = sum(alpha relu(g))
        denominator = 2 * g**2 + a.sum(dim=(2, 3), keepdim=True) * g**3
        alpha = torch.where(denominator != 0, g**2 / torch.where(denominator != 0, denominator, 1), 0)
        weights = (alpha * torch.relu(g)).sum(dim=(2, 3), keepdim=True)
        maps = torch.relu((weights * a).sum(1))
    peak = maps.amax(dim=(1, 2), keepdim=True)
    maps = torch.where(peak > 1e-12, maps / torch.where(peak > 1e-12, peak, 1), 0)
    return maps.numpy(), logits.detach().numpy()


@pytest.fixture(scope="module", params=["resnet18", "resnet34"])
def pair(request):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    stages = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}[request.param]
    reference = TorchResNet(stages)
    randomize(reference, seed=1)
    reference.eval()
    model = models.create_model(request.param)
    variables = convert(reference.state_dict(), request.param)
    # The converted tree must have exactly the zoo's structure and shapes.
    expected = jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0), SIZE))
    assert jax.tree.structure(expected) == jax.tree.structure(variables)
    assert all(e.shape == v.shape for e, v in zip(jax.tree.leaves(expected), jax.tree.leaves(variables)))
    return reference, model, variables


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "hirescam"])
def test_cam_matches_pytorch_hooks(pair, method):
    reference, model, variables = pair
    images = np.random.default_rng(2).normal(size=(2, SIZE, SIZE, 1)).astype(np.float32)
    expected, expected_logits = torch_cam(reference, images, method)
    heatmaps, logits = compute_cam(model, variables, images, method=method)
    assert heatmaps.shape == expected.shape == (2, 3, 3)
    np.testing.assert_allclose(logits, expected_logits, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(heatmaps, expected, atol=1e-4)
    assert expected.max() == pytest.approx(1.0) and np.ptp(expected) > 0.01  # a real map
    # Upsampled to the input, against torch's bilinear (align_corners=False).
    up = torch.nn.functional.interpolate(torch.from_numpy(expected)[:, None], size=(SIZE, SIZE),
                                         mode="bilinear", align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(upsample_cam(heatmaps, SIZE), up, atol=1e-4)
