"""A model trained on phantoms points at the lesions: the CAM is not decoration.

Trains a narrow ResNet for a few hundred steps on in-memory 128-px phantoms
(its own short jit loop with optax), then scores its Grad-CAM with
``evaluate_localization`` on held-out phantoms written as files.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from mammojax import models
from mammojax.checkpoint import Checkpoint
from mammojax.data.preprocess import preprocess_image
from mammojax.data.records import Record
from mammojax.data.synthetic import make_phantom
from mammojax.explain.explain import evaluate_localization
from mammojax.models.resnet import BasicBlock, ResNet

SIZE = 128
LESION_SIZE = (0.08, 0.14)  # a little larger than the default: stage4 is only 4x4 at 128 px


def phantoms(seed: int, count: int):
    rng = np.random.default_rng(seed)
    out = []
    for index in range(count):
        positive = index % 2 == 1
        image, mask, lesions = make_phantom(rng, size=SIZE, positive=positive,
                                            laterality="LR"[index // 2 % 2], view=("CC", "MLO")[index // 4 % 2],
                                            lesion_size=LESION_SIZE, calcification_prob=0.0)
        out.append((image, int(positive), lesions))
    return out


def train(model, data, *, steps: int, batch_size: int = 16, seed: int = 0):
    images = np.stack([preprocess_image(img, image_size=SIZE).image for img, _, _ in data])
    labels = np.array([label for _, label, _ in data], np.int32)
    variables = models.init_variables(model, jax.random.key(seed), SIZE)
    optimizer = optax.adam(3e-3)
    state = (variables["params"], variables["batch_stats"], optimizer.init(variables["params"]))

    @jax.jit
    def step(state, x, y):
        params, batch_stats, opt_state = state

        def loss_fn(p):
            (logits, _), updates = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                               mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        changes, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, changes), updates["batch_stats"], opt_state), loss

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        index = rng.choice(len(images), batch_size, replace=False)
        flip = rng.uniform() < 0.5  # mirrored breasts are still breasts
        x = images[index][:, :, ::-1] if flip else images[index]
        state, loss = step(state, jnp.asarray(x), jnp.asarray(labels[index]))
    params, batch_stats, _ = state
    variables = {"params": params, "batch_stats": batch_stats}
    # "Precise BN": with weights moving fast, the running statistics lag behind
    # them (eval accuracy was near chance without this); re-estimate them with
    # the final weights on larger batches.
    refresh = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])[1]["batch_stats"])
    for _ in range(40):
        index = rng.choice(len(images), 64, replace=False)
        variables = {**variables, "batch_stats": refresh(variables, jnp.asarray(images[index]))}
    return variables, float(loss)


@pytest.mark.slow
def test_trained_model_points_at_lesions_far_above_chance(tmp_path):
    model = ResNet(stage_sizes=(1, 1, 1, 1), block_cls=BasicBlock, width=16)
    variables, loss = train(model, phantoms(seed=1, count=256), steps=300)
    assert loss < 0.5, f"the tiny model did not learn the phantoms (loss {loss:.3f})"

    records = []
    for index, (image, label, lesions) in enumerate(phantoms(seed=2, count=32)):
        path = Path(tmp_path) / f"p{index}.png"
        Image.fromarray(np.round(image * 65535).astype(np.uint16)).save(path)
        records.append(Record(str(path), label, f"patient{index}", lesions=tuple(lesions)))
    meta = {"format": 1, "model": {"name": "tiny", "num_classes": 2, "head_pooling": "avg"},
            "data": {"image_size": SIZE}, "tau": 0.5, "temperature": 1.0}
    checkpoint = Checkpoint(model=model, variables=variables, meta=meta, path=Path(tmp_path))
    # stage3 (8x8 at 128 px): stage4 is only 4x4 here, too coarse to point at a
    # lesion a tenth of the image wide (at 224-512 px it is 7x7-16x16).
    report = evaluate_localization(checkpoint, records, layer="stage3", fraction=0.05, num_random=2)
    summary = report["summary"]
    assert summary["images"] == 16  # the positives
    assert summary["pointing_game"] > 2 * summary["pointing_chance"], summary
    # Deleting what the CAM highlights costs more probability than deleting
    # the same shape elsewhere.
    assert summary["drop_cam"] > summary["drop_random"], summary
