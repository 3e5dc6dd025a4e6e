"""convert-weights: reading state dicts, renaming, errors, and the checkpoint round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

import torch_reference  # noqa: E402
from mammojax import checkpoint, models, weights  # noqa: E402
from mammojax.cli import main  # noqa: E402
from mammojax.errors import CheckpointError, MammojaxError  # noqa: E402


@pytest.fixture(scope="module")
def resnet18_state():
    """torchvision-layout ResNet-18 weights (3 channels, 1000 classes) as NumPy."""
    torch.manual_seed(0)
    reference = torch_reference.resnet18(num_classes=1000)
    torch_reference.randomize_batchnorm(reference, torch.Generator().manual_seed(1))
    return {k: v.numpy().copy() for k, v in reference.state_dict().items()}


def test_mapping_transposes_and_sums_the_stem(resnet18_state):
    converted = weights.convert_state_dict(resnet18_state, "resnet18", num_classes=1000)
    params, stats = converted.variables["params"], converted.variables["batch_stats"]
    stem = resnet18_state["conv1.weight"]  # (64, 3, 7, 7)
    np.testing.assert_allclose(params["conv1"]["kernel"][..., 0, :],
                               stem.sum(axis=1).transpose(1, 2, 0), rtol=1e-6)
    np.testing.assert_array_equal(params["layer2_0"]["downsample_conv"]["kernel"],
                                  resnet18_state["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(stats["layer3_1"]["bn2"]["var"], resnet18_state["layer3.1.bn2.running_var"])
    np.testing.assert_array_equal(params["head"]["kernel"], resnet18_state["fc.weight"].T)
    assert not any("head" in note for note in converted.notes)


def test_rgb_model_keeps_three_channel_stem(resnet18_state):
    converted = weights.convert_state_dict(resnet18_state, "resnet18_rgb", num_classes=1000)
    assert converted.variables["params"]["conv1"]["kernel"].shape == (7, 7, 3, 64)
    assert not converted.notes


def test_other_class_count_gets_fresh_seeded_head(resnet18_state):
    first = weights.convert_state_dict(resnet18_state, "resnet18", num_classes=2, seed=3)
    again = weights.convert_state_dict(resnet18_state, "resnet18", num_classes=2, seed=3)
    other = weights.convert_state_dict(resnet18_state, "resnet18", num_classes=2, seed=4)
    kernel = first.variables["params"]["head"]["kernel"]
    assert kernel.shape == (512, 2)
    np.testing.assert_array_equal(kernel, again.variables["params"]["head"]["kernel"])
    assert not np.array_equal(kernel, other.variables["params"]["head"]["kernel"])
    assert any("1000 classes" in note and "freshly initialised" in note for note in first.notes)


def test_unknown_and_missing_keys_are_named(resnet18_state):
    extra = dict(resnet18_state, **{"layer5.0.conv1.weight": np.zeros((1, 1, 1, 1), np.float32)})
    with pytest.raises(weights.WeightsError, match="layer5.0.conv1.weight"):
        weights.convert_state_dict(extra, "resnet18")
    partial = {k: v for k, v in resnet18_state.items() if not k.startswith("layer4.1.bn1")}
    with pytest.raises(weights.WeightsError, match="layer4_1/bn1"):
        weights.convert_state_dict(partial, "resnet18")
    with pytest.raises(weights.WeightsError, match="denseblock|do not belong"):
        weights.convert_state_dict(resnet18_state, "densenet121")


def test_readers_agree_and_refuse_unknown_formats(tmp_path, resnet18_state):
    save_file(resnet18_state, str(tmp_path / "w.safetensors"))
    np.savez(tmp_path / "w.npz", **resnet18_state)
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in resnet18_state.items()}}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.npz", "w.pth"):
        loaded = weights.load_state_dict(tmp_path / name)
        assert loaded.keys() == resnet18_state.keys()
        np.testing.assert_array_equal(loaded["layer1.0.bn1.running_mean"],
                                      resnet18_state["layer1.0.bn1.running_mean"])
    (tmp_path / "w.txt").write_text("not weights")
    with pytest.raises(weights.WeightsError, match="w.txt"):
        weights.load_state_dict(tmp_path / "w.txt")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(weights.WeightsError, match="bad.safetensors"):
        weights.load_state_dict(tmp_path / "bad.safetensors")


def test_timm_mobilenet_names_map_like_torchvision():
    torch.manual_seed(0)
    state = {k: v.numpy() for k, v in torch_reference.mobilenet_v2(num_classes=1000).state_dict().items()}
    timm_state = {_to_timm_mobilenet(k): v for k, v in state.items()}
    ours = weights.convert_state_dict(state, "mobilenet_v2", num_classes=1000).variables
    theirs = weights.convert_state_dict(timm_state, "mobilenet_v2", num_classes=1000).variables
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)


def _to_timm_mobilenet(key: str) -> str:
    """torchvision MobileNet-V2 key -> timm's name for the same tensor."""
    parts = key.split(".")
    leaf = parts[-1]
    if parts[0] == "classifier":
        return f"classifier.{leaf}"
    index = int(parts[1])
    if index == 0:
        return f"{('conv_stem', 'bn1')[int(parts[2])]}.{leaf}"
    if index == 18:
        return f"{('conv_head', 'bn2')[int(parts[2])]}.{leaf}"
    repeats = [1, 2, 3, 4, 3, 3, 1]
    stage, start = 0, 1
    while index >= start + repeats[stage]:
        start += repeats[stage]
        stage += 1
    prefix = f"blocks.{stage}.{index - start}"
    rest = parts[3:-1]
    if index == 1:  # depthwise-separable block: conv.0.{0,1}, conv.1, conv.2
        name = {("0", "0"): "conv_dw", ("0", "1"): "bn1", ("1",): "conv_pw", ("2",): "bn2"}[tuple(rest)]
    else:
        name = {("0", "0"): "conv_pw", ("0", "1"): "bn1", ("1", "0"): "conv_dw", ("1", "1"): "bn2",
                ("2",): "conv_pwl", ("3",): "bn3"}[tuple(rest)]
    return f"{prefix}.{name}.{leaf}"


def test_checkpoint_round_trip_via_cli(tmp_path, resnet18_state):
    src = tmp_path / "resnet18.safetensors"
    save_file(resnet18_state, str(src))
    out = tmp_path / "ckpt"
    args = ["convert-weights", str(src), "--model", "resnet18", "--out", str(out),
            "--num-classes", "2", "--image-size", "64x48"]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 0, result.output
    assert "freshly initialised" in result.output and "summed the RGB stem" in result.output

    loaded = checkpoint.load_checkpoint(out, expect_model="resnet18")
    assert loaded.image_shape == (64, 48) and loaded.meta["model"]["num_classes"] == 2
    assert json.loads((out / "mammojax.json").read_text())["converted_from"] == src.name
    expected = weights.convert_state_dict(resnet18_state, "resnet18", num_classes=2).variables
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(loaded.variables), expected)
    x = np.random.default_rng(0).normal(size=(1, 64, 48, 1)).astype(np.float32)
    logits, _ = loaded.model.apply(loaded.variables, x)
    reference, _ = models.create_model("resnet18").apply(expected, x)
    np.testing.assert_allclose(logits, reference, rtol=1e-6)

    with pytest.raises(CheckpointError, match="resnet50"):
        checkpoint.load_checkpoint(out, expect_model="resnet50")
    # An existing checkpoint is kept unless --overwrite; errors are one line.
    assert main(args) != 0
    assert main(args + ["--overwrite"]) == 0


def test_unknown_model_is_a_user_error(tmp_path, capsys):
    assert main(["convert-weights", str(tmp_path / "x.safetensors"), "--model", "vgg", "--out",
                 str(tmp_path / "o")]) != 0
    assert "resnet18" in capsys.readouterr().err
    with pytest.raises(MammojaxError, match="not found"):
        weights.load_state_dict(tmp_path / "x.safetensors")


def _cli():
    from mammojax.cli import cli

    return cli
