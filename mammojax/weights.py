"""Import torchvision/timm weights into mammojax models.

A PyTorch state dict is read from ``.safetensors``, ``.npz`` or (only when
torch is installed, and only with ``weights_only=True``) ``.pth``. Each key is
renamed to the Flax variable it feeds, by model family:

* ResNet (torchvision and timm share names): ``layer1.0.conv1.weight`` ->
  ``params/layer1_0/conv1/kernel``, ``downsample.0/1`` -> ``downsample_conv/bn``;
* DenseNet (torchvision and timm, including the old ``norm.1`` spelling):
  ``features.denseblock1.denselayer1.norm1`` -> ``denseblock1/denselayer1/norm1``;
* MobileNet-V2, torchvision (``features.N.conv.*``) and timm (``conv_stem``,
  ``blocks.S.I.*``, ``conv_head``) -> ``features_N/{expand,depthwise,project}``.

Convolutions go OIHW -> HWIO, Linear (out, in) -> (in, out), BatchNorm
running statistics -> ``batch_stats``. A 1-channel model takes 3-channel stem
weights summed over RGB (identical output to the RGB model on a grey image
replicated to three channels). A different class count gets a fresh, seeded
head. Anything unmapped or missing is an error that names the keys.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from mammojax import checkpoint
from mammojax.config import base_config
from mammojax.data.preprocess import image_size_of
from mammojax.errors import MammojaxError

# Keys that carry no weights (BatchNorm's step counter).
IGNORED_SUFFIXES = ("num_batches_tracked",)
BN_LEAVES = {"weight": ("params", "scale"), "bias": ("params", "bias"),
             "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


class WeightsError(MammojaxError):
    """A weights file cannot be read or does not fit the model."""


@dataclasses.dataclass
class Converted:
    variables: dict  # {"params", "batch_stats"} as NumPy float32 arrays
    notes: list[str]  # what the conversion changed (stem summed, head replaced)


# ---------------------------------------------------------------- reading


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a state dict as float32 NumPy arrays; never unpickles arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.numpy import load_file

            tensors = load_file(str(path))
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                tensors = {key: archive[key] for key in archive.files}
        elif suffix in (".pth", ".pt", ".bin"):
            tensors = _load_torch(path)
        else:
            raise WeightsError(f"{path}: unsupported weights format {suffix!r}; "
                               "use .safetensors, .npz or .pth")
    except WeightsError:
        raise
    except Exception as err:  # corrupt files raise many types; report, don't trace
        raise WeightsError(f"{path}: cannot read weights ({type(err).__name__}: {err})") from None
    return {_strip_prefix(key): np.asarray(value, dtype=np.float32) for key, value in tensors.items()}


def _load_torch(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise WeightsError(f"{path}: reading .pth needs PyTorch; install torch, or convert the "
                           "file to .safetensors (safetensors.torch.save_file)") from None
    obj = torch.load(path, map_location="cpu", weights_only=True)
    # Training checkpoints often wrap the weights.
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: not a state dict")
    return {key: value.detach().float().numpy() for key, value in obj.items()
            if isinstance(value, torch.Tensor)}


def _strip_prefix(key: str) -> str:
    # nn.DataParallel and torch.compile wrap every name.
    for prefix in ("module.", "_orig_mod."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


# ---------------------------------------------------------------- renaming


def _resnet_path(parts: list[str]) -> tuple[str, ...] | None:
    if parts[0] == "fc" and len(parts) == 1:
        return ("head",)
    if parts[0].startswith("layer") and len(parts) >= 3:
        block = f"{parts[0]}_{parts[1]}"
        if parts[2] == "downsample" and len(parts) == 4:
            return (block, {"0": "downsample_conv", "1": "downsample_bn"}.get(parts[3], "?"))
        return (block, *parts[2:])
    return tuple(parts)


def _densenet_path(parts: list[str]) -> tuple[str, ...] | None:
    if parts == ["classifier"]:
        return ("head",)
    if parts[0] != "features":
        return None
    parts = parts[1:]
    # Old torchvision checkpoints spell "norm1" as "norm.1" inside dense layers.
    if len(parts) >= 2 and parts[-1].isdigit() and parts[-2] in ("norm", "conv", "relu") \
            and any(p.startswith("denselayer") for p in parts):
        parts = parts[:-2] + [parts[-2] + parts[-1]]
    return tuple(parts)


def _mobilenet_block_layout() -> list[int]:
    """Expansion ratio of each torchvision ``features`` block (index 1..17)."""
    from mammojax.models.mobilenet import INVERTED_RESIDUAL_SETTINGS  # imports JAX and flax at the top

    return [t for t, _, n, _ in INVERTED_RESIDUAL_SETTINGS for _ in range(n)]


def _mobilenet_path(parts: list[str]) -> tuple[str, ...] | None:
    ratios = _mobilenet_block_layout()
    last = len(ratios) + 1
    if parts[0] == "classifier":  # torchvision: classifier.1 (after dropout); timm: classifier
        return ("head",) if parts in (["classifier", "1"], ["classifier"]) else None
    if parts[0] == "features" and len(parts) >= 3:
        index = int(parts[1]) if parts[1].isdigit() else -1
        if index in (0, last) and len(parts) == 3:
            return (f"features_{index}", {"0": "conv", "1": "bn"}.get(parts[2], "?"))
        if 1 <= index < last and parts[2] == "conv":
            # Sequence: [expand ConvBNAct,] depthwise ConvBNAct, project conv, project BN.
            layers = (["expand"] if ratios[index - 1] != 1 else []) + ["depthwise"]
            rest = parts[3:]
            if not rest or not rest[0].isdigit():
                return None
            position = int(rest[0])
            if position < len(layers) and len(rest) == 2:
                return (f"features_{index}", layers[position], {"0": "conv", "1": "bn"}.get(rest[1], "?"))
            if len(rest) == 1 and position - len(layers) in (0, 1):
                return (f"features_{index}", "project", ("conv", "bn")[position - len(layers)])
        return None
    return _timm_mobilenet_path(parts, ratios)


def _timm_mobilenet_path(parts: list[str], ratios: list[int]) -> tuple[str, ...] | None:
    from mammojax.models.mobilenet import INVERTED_RESIDUAL_SETTINGS  # imports JAX and flax at the top

    top = {"conv_stem": ("features_0", "conv"), "bn1": ("features_0", "bn"),
           "conv_head": (f"features_{len(ratios) + 1}", "conv"),
           "bn2": (f"features_{len(ratios) + 1}", "bn")}
    if len(parts) == 1:
        return top.get(parts[0])
    if parts[0] != "blocks" or len(parts) != 4 or not (parts[1] + parts[2]).isdigit():
        return None
    stage, block = int(parts[1]), int(parts[2])
    index = 1 + sum(n for _, _, n, _ in INVERTED_RESIDUAL_SETTINGS[:stage]) + block
    if not 1 <= index <= len(ratios):
        return None
    if ratios[index - 1] == 1:  # timm's DepthwiseSeparable block
        names = {"conv_dw": ("depthwise", "conv"), "bn1": ("depthwise", "bn"),
                 "conv_pw": ("project", "conv"), "bn2": ("project", "bn")}
    else:
        names = {"conv_pw": ("expand", "conv"), "bn1": ("expand", "bn"),
                 "conv_dw": ("depthwise", "conv"), "bn2": ("depthwise", "bn"),
                 "conv_pwl": ("project", "conv"), "bn3": ("project", "bn")}
    return (f"features_{index}", *names[parts[3]]) if parts[3] in names else None


def _renamer(model_name: str):
    if model_name.startswith("resnet"):
        return _resnet_path
    if model_name.startswith("densenet"):
        return _densenet_path
    if model_name.startswith("mobilenet"):
        return _mobilenet_path
    raise WeightsError(f"no weight mapping for model {model_name!r}")


# ---------------------------------------------------------------- conversion


def convert_state_dict(state_dict: Mapping[str, np.ndarray], model_name: str, *,
                       num_classes: int = 2, seed: int = 0, source: str = "state dict") -> Converted:
    """Maps a torchvision/timm state dict onto ``create_model(model_name, num_classes=...)``."""
    import jax

    from mammojax import models  # the zoo imports JAX and flax at the top, like jax above

    model = models.create_model(model_name, num_classes=num_classes)
    abstract = jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0), 32))
    targets = {(collection, *path): leaf for collection in ("params", "batch_stats")
               for path, leaf in _flatten(abstract[collection])}
    rename = _renamer(model_name)
    filled: dict[tuple, np.ndarray] = {}
    unknown, notes = [], []
    head_sources = {}
    for key, value in state_dict.items():
        key = _strip_prefix(key)
        if key.endswith(IGNORED_SUFFIXES):
            continue
        *module_parts, leaf_name = key.split(".")
        path = rename(module_parts) if module_parts else None
        target = _target_leaf(path, leaf_name, targets) if path else None
        if target is None:
            unknown.append(key)
            continue
        if path == ("head",):
            head_sources[leaf_name] = value
            continue
        filled[target] = _to_flax(value, targets[target].shape, key, notes, source)
    if unknown:
        raise WeightsError(f"{source}: {len(unknown)} key(s) do not belong to {model_name}: "
                           f"{_preview(unknown)}")
    _convert_head(head_sources, targets, filled, notes, num_classes, seed, source)
    missing = [_dotted(t) for t in targets if t not in filled]
    if missing:
        raise WeightsError(f"{source}: {len(missing)} variable(s) of {model_name} missing from the "
                           f"weights: {_preview(missing)}")
    variables = {"params": {}, "batch_stats": {}}
    for (collection, *path), value in filled.items():
        node = variables[collection]
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return Converted(variables=variables, notes=notes)


def _flatten(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def _target_leaf(path, leaf_name, targets) -> tuple | None:
    """The Flax variable a torch leaf feeds, by the kind of module at ``path``."""
    if ("params", *path, "kernel") in targets:  # conv or Dense
        leaf = {"weight": "kernel", "bias": "bias"}.get(leaf_name)
        return ("params", *path, leaf) if leaf and ("params", *path, leaf) in targets else None
    if ("params", *path, "scale") in targets and leaf_name in BN_LEAVES:
        collection, leaf = BN_LEAVES[leaf_name]
        return (collection, *path, leaf)
    return None


def _to_flax(value: np.ndarray, shape: tuple, key: str, notes: list, source: str) -> np.ndarray:
    if value.ndim == 4:  # conv OIHW -> HWIO
        value = value.transpose(2, 3, 1, 0)
        if value.shape[2] == 3 and shape[2] == 1:
            value = value.sum(axis=2, keepdims=True)
            notes.append(f"summed the RGB stem kernel {key} into one grey channel")
    elif value.ndim == 2:  # Linear (out, in) -> (in, out)
        value = value.T
    if value.shape != tuple(shape):
        raise WeightsError(f"{source}: {key} has shape {value.shape} after conversion, "
                           f"the model needs {tuple(shape)}")
    return np.ascontiguousarray(value, dtype=np.float32)


def _convert_head(head_sources, targets, filled, notes, num_classes, seed, source) -> None:
    kernel_shape = targets[("params", "head", "kernel")].shape
    weight = head_sources.get("weight")
    if weight is not None and weight.shape == (kernel_shape[1], kernel_shape[0]) \
            and "bias" in head_sources:
        filled[("params", "head", "kernel")] = _to_flax(weight, kernel_shape, "head", notes, source)
        filled[("params", "head", "bias")] = head_sources["bias"].astype(np.float32)
        return
    if weight is not None and weight.shape[1] != kernel_shape[0]:
        raise WeightsError(f"{source}: classifier takes {weight.shape[1]} features, "
                           f"the model's head takes {kernel_shape[0]}")
    import flax.linen as nn
    import jax

    from mammojax.models.common import head_kernel_init  # imports JAX and flax at the top

    head = nn.Dense(num_classes, kernel_init=head_kernel_init)
    fresh = head.init(jax.random.fold_in(jax.random.key(seed), 7), np.zeros((1, kernel_shape[0]), np.float32))
    filled[("params", "head", "kernel")] = np.asarray(fresh["params"]["kernel"])
    filled[("params", "head", "bias")] = np.asarray(fresh["params"]["bias"])
    found = f"{weight.shape[0]} classes" if weight is not None else "no classifier"
    notes.append(f"weights have {found}, the model {num_classes}: "
                 f"the head is freshly initialised (seed {seed})")


def _dotted(target: tuple) -> str:
    return "/".join(target)


def _preview(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


# ---------------------------------------------------------------- checkpoint


def convert_to_checkpoint(src: str | os.PathLike, model_name: str, out: str | os.PathLike, *,
                          num_classes: int = 2, image_size: int | str | tuple[int, int] = 224,
                          overwrite: bool = False, seed: int = 0) -> tuple[Path, list[str]]:
    """Converts a weights file into an inference checkpoint; returns (dir, notes).

    ``image_size``: the model input recorded for preprocessing, S, "HxW" or (H, W).
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise WeightsError(f"{out}: already exists; choose another path or pass --overwrite")
    converted = convert_state_dict(load_state_dict(src), model_name, num_classes=num_classes,
                                   seed=seed, source=str(src))
    config = base_config()
    config.seed = seed
    config.model.name = model_name
    config.model.num_classes = num_classes
    config.data.image_size = image_size_of(image_size)
    meta = checkpoint.make_meta(config, extra={"converted_from": Path(src).name,
                                               "conversion_notes": converted.notes})
    path = checkpoint.save_checkpoint(out, converted.variables, meta, overwrite=overwrite)
    return path, converted.notes
