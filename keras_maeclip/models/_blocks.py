"""The pre-LN transformer stack every encoder and the decoder are built from."""

import keras_hub

from keras_maeclip.layers.activations import ACTIVATIONS


def pre_ln_blocks(num_layers, hidden_dim, num_heads, mlp_ratio=4.0, dropout=0.0,
                  layer_norm_epsilon=1e-6, dtype=None, prefix="transformer_layer",
                  activation="gelu"):
    """`num_layers` pre-LN `keras_hub.layers.TransformerEncoder` blocks (GELU MLP).

    `activation`: `"gelu"` (exact, erf) or `"quick_gelu"` (OpenAI CLIP's).

    Layers are named `f"{prefix}_{i}"`, which sets their variables' paths;
    two towers of one model need different prefixes (saved weights are
    addressed by structure, not by these names).
    """
    return [
        keras_hub.layers.TransformerEncoder(
            intermediate_dim=int(round(hidden_dim * mlp_ratio)),
            num_heads=num_heads,
            dropout=dropout,
            activation=ACTIVATIONS[activation],
            layer_norm_epsilon=layer_norm_epsilon,
            normalize_first=True,
            dtype=dtype,
            name=f"{prefix}_{i}",
        )
        for i in range(num_layers)
    ]
