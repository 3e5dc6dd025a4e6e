"""Configuration: one ConfigDict holds every tunable of a run.

Config files in ``configs/`` are Python files with ``get_config()``. They start
from :func:`base_config` (the paper's recipe) and override a few fields, so a
variant reads as its differences. Command-line overrides use dotted keys,
``--config.optim.lr=3e-4``; a key that does not exist is an error that lists
the close matches, never a silently ignored typo.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
from pathlib import Path
from typing import Iterable

import ml_collections

from mammojax.data.preprocess import image_size_of, input_shape
from mammojax.errors import ConfigError


def _any_type(default) -> ml_collections.FieldReference:
    """A field that takes a value of any type: ConfigDict refuses a str where an int was declared."""
    return ml_collections.FieldReference(default, field_type=object)


def base_config() -> ml_collections.ConfigDict:
    """The paper's recipe: 1-channel ResNet-18, Adam 1e-4, cross-entropy."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # every random choice (init, splits, shuffling, augmentation) flows from it

    c.model = ml_collections.ConfigDict()
    c.model.name = "resnet18"  # a key of mammojax.models.MODELS
    c.model.num_classes = 2  # 0 = normal, 1 = cancer/abnormal
    c.model.head_pooling = "avg"  # "avg" (paper), "max" or "topk" pooling before the head
    c.model.dtype = "float32"  # "bfloat16" for mixed precision on GPU/TPU
    c.model.init_checkpoint = ""  # optional converted weights to start from

    c.data = ml_collections.ConfigDict()
    c.data.dataset = "synthetic"  # synthetic | mias | inbreast | cbis_ddsm | vindr | rsna | csv
    c.data.data_dir = ""  # dataset root; unused for synthetic
    c.data.task = "default"  # dataset-specific: mias "abnormal" or "malignant"
    # Model input: an int S (S x S) or "HxW" ("1024x832", a mammogram's aspect; any type may be set here).
    # The film is fitted inside keeping its aspect, padded, and z-scored over the film alone.
    c.data.image_size = _any_type(224)
    c.data.orient = False  # flip every breast to face the same side
    c.data.crop_breast = False  # crop to the breast region before resizing
    c.data.fix_inverted = True  # invert films with a white background (MONOCHROME1 exported as is), any format
    c.data.max_pixels = 80_000_000  # screening cap on decoded pixels per image
    c.data.prepared = ""  # an existing prepared dataset (mammojax data prepare --out DIR): read it, decode nothing;
    #                       its image size, orient, crop_breast and fix_inverted then replace those above
    c.data.prepared_root = ""  # where a dataset is prepared on demand; default: prepared/ in the user cache
    c.data.prepare_workers = 0  # decoding processes when preparing; 0 = every core
    c.data.val_fraction = 0.15  # patient-wise split fractions
    c.data.test_fraction = 0.15  # women held out for mammojax eval --split test
    c.data.num_folds = 0  # >0: k-fold cross-validation instead of a fixed split
    c.data.fold = 0  # which fold is held out when num_folds > 0
    c.data.synthetic_count = 256  # phantom images for dataset="synthetic"
    c.data.balanced_sampling = False  # draw classes equally often in training

    c.augment = ml_collections.ConfigDict()
    c.augment.hflip = True  # random left-right mirror
    c.augment.vflip = False  # random top-bottom mirror
    c.augment.rotation_degrees = 10.0  # uniform in [-r, r]
    c.augment.crop_scale_min = 0.8  # random resized crop keeps at least this area
    c.augment.gamma_range = (0.8, 1.25)  # non-linear: z-score does not undo it
    c.augment.contrast_range = (0.9, 1.1)  # random contrast factor
    c.augment.brightness_delta = 0.1  # random brightness shift, in z-score units

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adam"  # adam | adamw
    c.optim.lr = 1e-4  # peak learning rate (after warmup)
    c.optim.weight_decay = 0.0  # adamw: decoupled decay; adam: L2 added to the gradient
    c.optim.warmup_epochs = 0.0  # linear warmup from lr/warmup_steps to lr
    c.optim.schedule = "constant"  # constant | cosine
    c.optim.grad_clip_norm = 0.0  # 0 disables clipping
    c.optim.label_smoothing = 0.0  # cross-entropy target smoothing
    c.optim.class_weighting = False  # weight the loss by inverse class frequency

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 16  # global batch, split over all devices
    c.train.epochs = 30  # the schedule (and the run) ends after this many epochs
    c.train.eval_batch_size = 32  # validation batch (padded and masked, every film counts once)
    c.train.best_metric = "auc"  # validation metric that picks the best checkpoint
    c.train.best_mode = "max"  # max | min: which way best_metric improves
    c.train.log_every_steps = 10  # a metrics.jsonl record every N steps
    c.train.checkpoint_every_epochs = 1  # checkpoint at every N-th epoch end (and the best, and the last)
    c.train.checkpoint_every_steps = 0  # also checkpoint every N steps (0: off)
    # Also checkpoint when this long has passed since the last one (checked every log_every_steps;
    # 0: off), so a crash loses minutes, not an epoch. SIGTERM saves at once and exits 0.
    c.train.checkpoint_every_minutes = 10.0
    # The trainer (mammojax.train.trainers.TRAINERS): "whole_image" (augmented films, the paper)
    # or "patches" (lesion-centred patches, films scored by windows; the patch section below).
    c.train.recipe = "whole_image"
    # Explanation-guided training (mammojax.train.losses.CAM_LOSSES): weight of a loss on the
    # explain.method / explain.layer heatmap of each positive film with lesion circles (0: off, the plain step).
    c.train.cam_loss_weight = 0.0
    c.train.cam_loss = "energy"  # "energy": heatmap mass outside the lesion; "rrr": input gradients outside it

    c.eval = ml_collections.ConfigDict()
    c.eval.threshold_policy = "youden"  # fixed | youden | sensitivity | specificity
    c.eval.tau = 0.5  # used by the fixed policy
    c.eval.target = 0.9  # target sensitivity/specificity for those policies
    c.eval.patient_aggregate = "max"  # max | mean over a patient's views
    c.eval.calibrate = True  # fit temperature scaling on validation data
    c.eval.tta_hflip = False  # average the logits of the image and its mirror (mammojax.scoring)
    c.eval.bootstrap = 1000  # bootstrap resamples (of patients) for the AUC CI
    # How a film becomes one score: "whole" (one pass of the model) or "windows" (patch-sized
    # windows every patch.window_stride px over the breast, mean of the top patch.window_top_k margins).
    # Stored in checkpoints (mammojax.scoring.FilmScoring): every entry point scores films this way.
    c.eval.scoring = "whole"
    c.eval.contralateral = 0.0  # CV only: subtract this x the woman's other-breast margin (0: off)

    # Lesion-patch training (train.recipe = "patches"; mammojax.train.patches). Sizes are in
    # model-input pixels (the film is data.image_size px); epochs, batch and optimizer are train.* / optim.*.
    c.patch = ml_collections.ConfigDict()
    c.patch.size = 64  # patch side; the window side when eval.scoring = "windows"
    c.patch.positives_per_lesion = 2  # jittered crops of each annotated lesion centre per epoch
    c.patch.negatives_per_positive = 1.0  # lesion-free patches per lesion patch (1.0: balanced classes)
    c.patch.jitter_fraction = 0.25  # random shift of a positive's centre, as a fraction of the side
    c.patch.background_from_abnormal = True  # negatives also from the lesion-free breast of abnormal films
    c.patch.hard_negative_fraction = 0.0  # share of negatives mined as the current network's top scorers
    c.patch.hard_negative_pool = 4  # mined negatives are the best of this many times as many draws
    c.patch.hard_negative_start = 0.5  # mining starts once this fraction of the steps is done
    c.patch.window_stride = 16  # step between scoring windows
    c.patch.window_top_k = 3  # a film's score: mean margin of its k highest windows

    # Patient-wise k-fold cross-validation (mammojax cv; mammojax.train.cross_validation).
    c.cv = ml_collections.ConfigDict()
    c.cv.num_folds = 5  # folds of women; each is the test set once
    c.cv.ensemble = 1  # networks per fold (seeds differ); their window margins are averaged

    c.explain = ml_collections.ConfigDict()
    c.explain.method = "gradcam"  # gradcam | gradcam++ | hirescam
    c.explain.layer = "stage4"  # the feature map Grad-CAM explains
    return c


def quickstart_config() -> ml_collections.ConfigDict:
    """A few-minute run on built-in synthetic phantoms (no dataset needed).

    The paper's model and loss; what differs is sized for a 2-core CPU: small
    inputs, few epochs, and a higher learning rate with warmup + cosine decay
    because there are few steps to learn in. Grad-CAM reads stage3, since
    stage4 is only a few pixels across at this input size.
    """
    c = base_config()
    c.data.dataset = "synthetic"
    c.data.synthetic_count = 256  # 64 women x 4 views, half of them with a lesion
    c.data.image_size = 96
    c.train.batch_size = 16
    c.train.eval_batch_size = 64
    c.train.epochs = 8
    c.train.log_every_steps = 5
    c.optim.lr = 1e-3
    c.optim.warmup_epochs = 1.0
    c.optim.schedule = "cosine"
    c.eval.bootstrap = 200
    c.explain.layer = "stage3"
    return c


def load_config(path: str | Path | None, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
    """Loads ``get_config()`` from a config file and applies dotted overrides.

    ``overrides`` are strings like ``"optim.lr=3e-4"`` or ``"--config.optim.lr=3e-4"``.
    """
    if path is None:
        config = base_config()
    else:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        spec = importlib.util.spec_from_file_location(f"_mammojax_config_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # a config file is user code: report, don't trace
            raise ConfigError(f"{path}: cannot load config: {type(err).__name__}: {err}") from err
        if not hasattr(module, "get_config"):
            raise ConfigError(f"{path}: defines no get_config()")
        config = module.get_config()
    for item in overrides:
        apply_override(config, item)
    return config


def apply_override(config: ml_collections.ConfigDict, item: str) -> None:
    """Applies one ``key=value`` override, keeping the type of the existing field."""
    text = item[len("--config."):] if item.startswith("--config.") else item
    if "=" not in text:
        raise ConfigError(f"override {item!r} is not of the form --config.KEY=VALUE")
    key, raw = text.split("=", 1)
    parent, leaf = _resolve_parent(config, key)
    if key in _OWN_SYNTAX:
        # Assigning a new field, not a value: a config declaring an int here still takes "HxW".
        parent[leaf] = _any_type(_OWN_SYNTAX[key](raw))
        return
    current = parent[leaf]
    parent[leaf] = _parse_value(key, raw, current)


def _image_size(raw: str):
    """``--config.data.image_size=1024x832`` (or ``=256``): stored as S when square, else "HxW"."""
    return image_size_of(input_shape(raw, name="data.image_size"))


# Fields whose command-line value has a syntax of its own rather than a Python literal's.
_OWN_SYNTAX = {"data.image_size": _image_size}


def _resolve_parent(config, dotted: str):
    parts = dotted.split(".")
    node = config
    for depth, part in enumerate(parts):
        prefix = ".".join(parts[:depth])
        if not isinstance(node, ml_collections.ConfigDict):
            raise ConfigError(f"unknown config key {dotted!r}: {prefix!r} is a value, not a section")
        keys = list(node.keys())
        if part not in keys:
            close = suggest_keys(config, parts, depth)
            valid = sorted(f"{prefix}.{k}" if prefix else k for k in keys)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; valid keys: {', '.join(valid)}"
            raise ConfigError(f"unknown config key {dotted!r}{hint}")
        if depth == len(parts) - 1:
            return node, part
        node = node[part]
    raise AssertionError("unreachable")


# Names other frameworks use, for the field this config calls otherwise.
KEY_SYNONYMS = {
    "learning_rate": "optim.lr", "lr_rate": "optim.lr", "base_lr": "optim.lr", "lr": "optim.lr",
    "optimizer": "optim.name", "opt": "optim.name", "wd": "optim.weight_decay",
    "weight_decay": "optim.weight_decay", "scheduler": "optim.schedule", "lr_schedule": "optim.schedule",
    "warmup": "optim.warmup_epochs", "clip": "optim.grad_clip_norm",
    "epochs": "train.epochs", "num_epochs": "train.epochs", "n_epochs": "train.epochs",
    "max_epochs": "train.epochs", "epoch": "train.epochs",
    "batch_size": "train.batch_size", "batch": "train.batch_size", "bs": "train.batch_size",
    "batchsize": "train.batch_size", "train_batch_size": "train.batch_size",
    "arch": "model.name", "architecture": "model.name", "backbone": "model.name",
    "model_name": "model.name", "model": "model.name", "num_classes": "model.num_classes",
    "img_size": "data.image_size", "image_size": "data.image_size", "input_size": "data.image_size",
    "resolution": "data.image_size", "dataset_name": "data.dataset", "dataset": "data.dataset",
    "data_dir": "data.data_dir", "data_root": "data.data_dir", "root": "data.data_dir",
    "cache_dir": "data.prepared_root",
}


def _leaf_keys(config, prefix: str = "") -> list[str]:
    out = []
    for key in config.keys():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(config[key], ml_collections.ConfigDict):
            out.extend(_leaf_keys(config[key], dotted))
        else:
            out.append(dotted)
    return out


def suggest_keys(config, parts: list[str], depth: int, n: int = 3) -> list[str]:
    """Up to ``n`` existing keys the user probably meant; ``parts[depth]`` is unknown.

    Names are compared leaf to leaf (comparing whole dotted paths rates every
    key of the same section as close: ``optim.learning_rate`` once suggested
    ``optim.name``): a known synonym first (``learning_rate`` -> ``optim.lr``),
    then the same leaf in another section (``train.lr`` -> ``optim.lr``), then
    spelling neighbours in the same section, then anywhere. A misspelt section
    is corrected in place (``optimizer.lr`` -> ``optim.lr``).
    """
    prefix, name = ".".join(parts[:depth]), parts[depth].lower()
    node = config[prefix] if prefix else config
    leaves = _leaf_keys(config)
    close_keys = difflib.get_close_matches(name, list(node.keys()), n=n, cutoff=0.6)
    if depth < len(parts) - 1:  # a section name: keep the rest of the path
        rest = ".".join(parts[depth + 1:])
        found = [".".join(filter(None, (prefix, k, rest))) for k in close_keys]
    else:
        found = [KEY_SYNONYMS[m] for m in difflib.get_close_matches(name, KEY_SYNONYMS, n=1, cutoff=0.85)]
        found += [leaf for leaf in leaves if leaf.rsplit(".", 1)[-1] == name]
        found += [f"{prefix}.{k}" if prefix else k for k in close_keys]
        by_leaf: dict[str, list[str]] = {}
        for leaf in leaves:
            by_leaf.setdefault(leaf.rsplit(".", 1)[-1], []).append(leaf)
        for close in difflib.get_close_matches(name, by_leaf, n=n, cutoff=0.8):
            found += by_leaf[close]
    existing = set(leaves) | set(_section_keys(config))
    return list(dict.fromkeys(k for k in found if k in existing))[:n]


def _section_keys(config, prefix: str = "") -> list[str]:
    out = []
    for key in config.keys():
        if isinstance(config[key], ml_collections.ConfigDict):
            dotted = f"{prefix}.{key}" if prefix else key
            out += [dotted, *_section_keys(config[key], dotted)]
    return out


def _parse_value(key: str, raw: str, current):
    if isinstance(current, ml_collections.ConfigDict):
        raise ConfigError(f"config key {key!r} is a section; set one of its fields")
    if isinstance(current, str):
        return raw
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        if isinstance(current, bool) and raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        raise ConfigError(f"config key {key!r}: cannot parse {raw!r} as {type(current).__name__}") from None
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r} expects true/false, got {raw!r}")
        return value
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, tuple) and isinstance(value, (list, tuple)):
        return tuple(value)
    if current is not None and not isinstance(value, type(current)):
        raise ConfigError(f"config key {key!r} expects {type(current).__name__}, got {raw!r}")
    return value


def to_json_dict(config: ml_collections.ConfigDict) -> dict:
    return config.to_dict()
