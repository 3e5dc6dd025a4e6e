"""Class activation maps (Grad-CAM family) as pure JAX functions.

Every model in the zoo passes its named feature maps through
``self.perturb(name, value)``. Adding a zero "perturbation" to a feature map
and differentiating the class logit with respect to it gives the gradient with
respect to the feature map itself, with no hooks. :func:`compute_cam` runs one
forward pass under :func:`jax.vjp`: the primal outputs are the logits and the
feature map, and pulling back a one-hot cotangent gives the gradient. The
backward pass only runs from the logits down to the chosen layer (for
``stage4`` that is just the pooling and the Dense head), so a CAM costs little
more than a prediction.

The maps are pure functions of ``(variables, images)``: they work under
``jit`` and ``vmap``, and they are differentiable (with respect to the
parameters and to the image), so a CAM can sit inside a training objective.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from mammojax.errors import MammojaxError

PERTURBATIONS = "perturbations"

# Below this peak value a map counts as empty: it is returned as zeros rather
# than blown up to [0, 1] from rounding noise.
EMPTY_MAP_PEAK = 1e-12


def _gradcam(activations: jax.Array, grads: jax.Array) -> jax.Array:
    """Selvaraju et al. 2017: channel weights are the spatially averaged gradients."""
    weights = jnp.mean(grads, axis=(1, 2), keepdims=True)
    return jax.nn.relu(jnp.sum(weights * activations, axis=-1))


def _gradcam_plus_plus(activations: jax.Array, grads: jax.Array) -> jax.Array:
    """Chattopadhay et al. 2018, with the exponential-score closed form.

    With ``Y = exp(S)`` the second and third derivatives of ``Y`` are powers of
    the first derivative of ``S`` times ``exp(S)``, and that factor cancels in
    the ``alpha`` ratio. The channel weights would carry one more positive
    per-image factor ``exp(S)``; the per-image normalisation removes it, so it
    is left out (it would overflow for large logits).
    """
    grads2 = grads**2
    grads3 = grads2 * grads
    activation_sums = jnp.sum(activations, axis=(1, 2), keepdims=True)
    denominator = 2.0 * grads2 + activation_sums * grads3
    # Where the denominator vanishes the gradient is zero too: alpha is 0/0,
    # taken as 0. The double `where` keeps the derivative finite there.
    safe = jnp.where(denominator != 0.0, denominator, 1.0)
    alpha = jnp.where(denominator != 0.0, grads2 / safe, 0.0)
    weights = jnp.sum(alpha * jax.nn.relu(grads), axis=(1, 2), keepdims=True)
    return jax.nn.relu(jnp.sum(weights * activations, axis=-1))


def _hirescam(activations: jax.Array, grads: jax.Array) -> jax.Array:
    """Draelos & Carin 2020: elementwise gradient times activation, summed over channels."""
    return jax.nn.relu(jnp.sum(grads * activations, axis=-1))


CAM_METHODS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "gradcam": _gradcam,
    "gradcam++": _gradcam_plus_plus,
    "hirescam": _hirescam,
}


def check_method(method: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    if method not in CAM_METHODS:
        raise MammojaxError(f"unknown CAM method {method!r}; valid: {', '.join(CAM_METHODS)}")
    return CAM_METHODS[method]


def normalize_maps(maps: jax.Array) -> jax.Array:
    """Scales each non-negative map ``(B, h, w)`` so its peak is 1; an empty map stays 0.

    Dividing by the peak (rather than min-max scaling) keeps 0 meaning "no
    evidence". The double ``where`` keeps the derivative finite for empty maps.
    """
    peak = jnp.max(maps, axis=(1, 2), keepdims=True)
    nonempty = peak > EMPTY_MAP_PEAK
    return jnp.where(nonempty, maps / jnp.where(nonempty, peak, 1.0), 0.0)


def zero_perturbations(model, variables: dict, images: jax.Array) -> dict:
    """Zeros shaped like every feature map the model passes through ``perturb``.

    Shapes come from :func:`jax.eval_shape`, so no forward pass is added to the
    computation (it is safe under ``jit``).
    """
    _, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, mutable=[PERTURBATIONS]),
        _without_perturbations(variables), images)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), dict(state[PERTURBATIONS]))


def _without_perturbations(variables: dict) -> dict:
    return {k: v for k, v in variables.items() if k != PERTURBATIONS}


def _layer_path(perturbations: dict, layer: str) -> tuple[str, ...]:
    """Where ``layer`` sits in the perturbation tree (top level for the zoo's models)."""
    if layer in perturbations:
        return (layer,)
    found = []
    for path, _ in jax.tree_util.tree_flatten_with_path(perturbations)[0]:
        keys = tuple(getattr(p, "key", str(p)) for p in path)
        if keys[-1] == layer or "/".join(keys) == layer:
            found.append(keys)
    if len(found) != 1:
        names = ["/".join(getattr(p, "key", str(p)) for p in path)
                 for path, _ in jax.tree_util.tree_flatten_with_path(perturbations)[0]]
        raise MammojaxError(f"unknown CAM layer {layer!r}; valid: {', '.join(names)}")
    return found[0]


def _set_path(tree: dict, path: tuple[str, ...], value) -> dict:
    tree = dict(tree)
    if len(path) == 1:
        tree[path[0]] = value
    else:
        tree[path[0]] = _set_path(tree[path[0]], path[1:], value)
    return tree


def _get_path(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def logits_and_gradient(model, variables: dict, images: jax.Array, *, layer: str = "stage4",
                        target_class: int | jax.Array = 1, train: bool = False, rngs=None,
                        mutable=False):
    """One forward pass: ``(logits, feature map, d logit[target] / d feature map)``.

    ``target_class`` is an int or an int array ``(B,)`` (one class per image).
    By default the model runs in eval mode (BatchNorm uses its running
    statistics, nothing is updated), so each image's gradient depends on that
    image alone.

    ``train=True`` runs it as a training step does (BatchNorm on the batch's
    own statistics, dropout from ``rngs``): the forward pass of an
    explanation-guided loss (``mammojax.train.losses``), shared with the
    classification loss. Then the layers between ``layer`` and the logits
    see the whole batch, and the gradient is that of the batch's summed
    target logits (what ``torch.autograd.grad`` of a summed score gives in a
    training step); it differs from the per-image one by the O(1/N) terms
    through the batch statistics. With ``mutable`` (e.g. ``["batch_stats"]``)
    the result is ``((logits, feature map, gradient), updated collections)``,
    as ``flax``'s ``apply`` returns them.
    """
    variables = _without_perturbations(variables)
    zeros = zero_perturbations(model, variables, images)
    path = _layer_path(zeros, layer)

    def forward(layer_perturbation):
        perturbations = _set_path(zeros, path, layer_perturbation)
        out = model.apply({**variables, PERTURBATIONS: perturbations}, images, train=train,
                          rngs=rngs, mutable=mutable)
        (logits, features), updates = out if mutable else (out, {})
        return (logits, features[layer] if layer in features else _get_path(features, path)), updates

    (logits, activations), pullback, updates = jax.vjp(forward, _get_path(zeros, path), has_aux=True)
    target = jax.nn.one_hot(jnp.broadcast_to(jnp.asarray(target_class), logits.shape[:1]),
                            logits.shape[-1], dtype=logits.dtype)
    (grads,) = pullback((target, jnp.zeros_like(activations)))
    return ((logits, activations, grads), updates) if mutable else (logits, activations, grads)


def compute_cam(model, variables: dict, images: jax.Array, *, method: str = "gradcam",
                layer: str = "stage4", target_class: int | jax.Array = 1,
                normalize: bool = True, train: bool = False, rngs=None, mutable=False):
    """Class activation maps for a batch: ``(heatmaps (B, h, w) float32, logits (B, C))``.

    ``method`` is one of :data:`CAM_METHODS`; ``layer`` a feature name the
    model perturbs (``stage4``, the last spatial map, by default). Heatmaps are
    at the layer's resolution, each scaled to peak 1 (see :func:`normalize_maps`);
    :func:`upsample_cam` brings them to the input size. ``train``, ``rngs``
    and ``mutable`` are :func:`logits_and_gradient`'s (with ``mutable`` the
    result is ``((heatmaps, logits), updated collections)``).
    """
    combine = check_method(method)
    out = logits_and_gradient(model, variables, images, layer=layer, target_class=target_class,
                              train=train, rngs=rngs, mutable=mutable)
    (logits, activations, grads), updates = out if mutable else (out, {})
    if activations.ndim != 4:
        raise MammojaxError(f"CAM layer {layer!r} is not a spatial map (shape {activations.shape})")
    # bfloat16 maps are combined in float32; float64 (tests) stays float64.
    dtype = jnp.promote_types(activations.dtype, jnp.float32)
    maps = combine(activations.astype(dtype), grads.astype(dtype))
    result = (normalize_maps(maps) if normalize else maps), logits
    return (result, updates) if mutable else result


def upsample_cam(heatmaps: jax.Array, size: int | tuple[int, int]) -> jax.Array:
    """Bilinear resize of ``(B, h, w)`` maps to ``size`` (half-pixel centres, like torch)."""
    height, width = (size, size) if isinstance(size, int) else size
    return jax.image.resize(heatmaps, (heatmaps.shape[0], height, width), method="bilinear")


def make_cam_fn(model, *, method: str = "gradcam", layer: str = "stage4",
                target_class: int = 1, size: int | tuple[int, int] | None = None):
    """A jitted ``fn(variables, images) -> (heatmaps, logits)``.

    With ``size`` (S, or the model input's ``(H, W)``) the heatmaps are
    upsampled to it inside the same compiled function.
    """
    check_method(method)

    def cam_fn(variables, images):
        heatmaps, logits = compute_cam(model, variables, images, method=method, layer=layer,
                                       target_class=target_class)
        if size is not None:
            heatmaps = upsample_cam(heatmaps, size)
        return heatmaps, logits

    return jax.jit(cam_fn)
