"""Layer-wise learning-rate decay for fine-tuning (MAE's `lr_decay`, BEiT).

Fine-tuning a pretrained ViT works better when the early blocks move less
than the late ones: the learning rate of block `i` (of `L`) is scaled by
`decay ** (L - i)`, the embeddings' by `decay ** (L + 1)`, and everything
after the last block (final norm, pooling head, projections, task heads)
keeps the full rate. Decoupled weight decay is scaled the same way, as it
is when a per-group learning rate is set in PyTorch (MAE's recipe).

Two pieces, both backend-agnostic:

- `layer_decay_scales(model, decay)`: `{variable path: scale}` from the
  towers' block structure (`transformer_layers` / `final_norm`, the same
  structure `lock_tower` uses).
- `LayerDecayAdamW(lr_scales=...)`: Keras' AdamW with a per-variable
  learning-rate scale. Variables of one scale are updated together by
  Keras' own (backend-specific) update path at `learning_rate · scale`.
"""

import collections

import keras

from keras_maeclip.optimizers import AdamW
from keras_maeclip.training.locking import TOWERS, tower_of

__all__ = ["LayerDecayAdamW", "layer_decay_scales"]


def _encoders(model):
    """The block-structured encoders of a model: `(name, encoder)` pairs."""
    backbone = getattr(model, "backbone", model)
    if hasattr(backbone, "image_encoder") and hasattr(backbone, "text_encoder"):
        return [(tower, tower_of(backbone, tower)) for tower in TOWERS]
    if hasattr(backbone, "transformer_layers"):  # MAE's ViT, M3AE's shared encoder
        return [("encoder", backbone)]
    raise ValueError(
        f"layer_decay_scales needs a CLIP, MAECLIP, M3AE or MAE task or backbone (towers "
        f"with transformer_layers); got {type(model).__name__}."
    )


def layer_decay_scales(model, decay):
    """Per-variable learning-rate scales of layer-wise decay: `{path: scale}`.

    In each tower (image and text for CLIP / MAE-CLIP, the one encoder for
    MAE and M3AE), with `L` blocks: variables of block `i` (0-based) get
    `decay ** (L - i)`; the tower's other variables before the blocks
    (patch or token embedding, positions, class token) get `decay ** (L +
    1)`; the final norm gets 1. Variables outside the towers (pooling
    heads, projections, temperature, decoder, task heads) are not listed:
    they keep the full rate. As MAE's `param_groups_lrd`, per tower.

    Args:
        model: a `CLIP`, `MAECLIP`, `M3AE` or `MAE` task or its backbone,
            or a model that holds such towers (pass its task).
        decay: float in (0, 1]; MAE fine-tunes ViT-B with 0.65, ViT-L 0.75.

    Returns:
        dict, variable path → float scale, for `LayerDecayAdamW(lr_scales=)`.

    Example:
    >>> from keras_maeclip.models import CLIP
    >>> model = CLIP.from_preset("clip_tiny_gap", vocabulary_size=64)
    >>> scales = layer_decay_scales(model, 0.75)
    >>> optimizer = LayerDecayAdamW(learning_rate=1e-4, lr_scales=scales)
    """
    decay = float(decay)
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"decay={decay} must be in (0, 1]; 1 is no decay, MAE uses 0.65–0.75.")
    scales = {}
    for name, encoder in _encoders(model):
        blocks = list(getattr(encoder, "transformer_layers", None) or [])
        if not blocks or not hasattr(encoder, "final_norm"):
            raise ValueError(
                f"layer_decay_scales: the {name} tower ({type(encoder).__name__}) does not "
                "expose transformer_layers and final_norm (ViTEncoder / TextEncoder do); "
                "a keras-hub tower has no block structure to decay over."
            )
        depth = len(blocks)
        by_id = {}
        for i, block in enumerate(blocks):
            for variable in block.weights:
                by_id[id(variable)] = decay ** (depth - i)
        for variable in encoder.final_norm.weights:
            by_id[id(variable)] = 1.0
        for variable in encoder.weights:
            scale = by_id.get(id(variable), decay ** (depth + 1))
            if scales.get(variable.path, scale) != scale:
                raise ValueError(f"layer_decay_scales: two variables share the path {variable.path!r}.")
            scales[variable.path] = scale
    return scales


@keras.saving.register_keras_serializable(package="keras_maeclip")
class LayerDecayAdamW(AdamW):
    """AdamW with a learning-rate scale per variable (layer-wise decay).

    A variable whose `path` is in `lr_scales` is updated at `learning_rate
    · scale`, its decoupled weight decay scaled alike; the others at the
    full rate. With every scale 1 (or `lr_scales` empty) this is Keras'
    AdamW. Variables of one scale go through the update step of
    `keras_maeclip.optimizers.AdamW` together (Keras' own on JAX and
    TensorFlow, `tf.distribute` included; PyTorch's fused kernel on torch).

    Args:
        lr_scales: dict, variable path → float scale ≥ 0 (from
            `layer_decay_scales`). A path matching no variable the
            optimizer builds for is an error (a typo would otherwise
            silently train at the full rate).
        **kwargs: `keras.optimizers.AdamW`'s.

    Example:
    >>> optimizer = LayerDecayAdamW(1e-4, weight_decay=0.05, lr_scales={"dense/kernel": 0.5})
    """

    def __init__(self, learning_rate=0.001, lr_scales=None, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        lr_scales = dict(lr_scales or {})
        for path, scale in lr_scales.items():
            if not float(scale) >= 0.0:
                raise ValueError(f"lr_scales[{path!r}]={scale}: scales must be ≥ 0.")
        self.lr_scales = {str(path): float(scale) for path, scale in lr_scales.items()}

    def build(self, variables):
        paths = collections.Counter(v.path for v in variables)
        unknown = sorted(set(self.lr_scales) - set(paths))
        if unknown:
            raise ValueError(
                f"LayerDecayAdamW: lr_scales names {len(unknown)} variable(s) the optimizer "
                f"does not train, e.g. {unknown[:3]}; compute the scales from the model you "
                "compile (layer_decay_scales(model, decay)) after building it."
            )
        shared = sorted(p for p, n in paths.items() if n > 1 and p in self.lr_scales)
        if shared:
            raise ValueError(f"LayerDecayAdamW: several trained variables share the path {shared[0]!r}.")
        super().build(variables)

    def _groups(self, *lists):
        """Zip the lists, grouped by the scale of the variable (last list)."""
        groups = collections.defaultdict(list)
        for items in zip(*lists):
            groups[self.lr_scales.get(items[-1].path, 1.0)].append(items)
        for scale, items in groups.items():
            yield scale, [list(column) for column in zip(*items)]

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        for scale, (group_grads, group_variables) in self._groups(grads, trainable_variables):
            if scale == 0.0:
                continue
            rate = learning_rate if scale == 1.0 else learning_rate * scale
            super()._backend_update_step(group_grads, group_variables, rate)

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None:
            return
        weight_decay = self.weight_decay
        try:
            for scale, (group,) in self._groups(variables):
                if scale == 0.0:
                    continue
                # Each backend's own decay step reads `weight_decay` as it
                # traces or runs: `lr · (wd · scale)` is the scaled decay.
                self.weight_decay = weight_decay * scale
                super()._apply_weight_decay(group)
        finally:
            self.weight_decay = weight_decay

    def get_config(self):
        return {**super().get_config(), "lr_scales": dict(self.lr_scales)}
