"""Linear probe: a frozen image encoder's pooled features → standardise + Dense."""

import keras
import numpy as np
from keras import ops

from keras_maeclip.evaluation.zero_shot import top_k_accuracy

PROBE_POOLINGS = ("gap", "max", "first", "map")


def _image_encoder(model):
    """The ViT image tower of a CLIP, MAE-CLIP or MAE task (ours or a keras-hub one)."""
    from keras_maeclip.models import HubViTTower, ViTEncoder

    encoder = getattr(model.backbone, "image_encoder", model.backbone)
    if not isinstance(encoder, (ViTEncoder, HubViTTower)):
        raise ValueError(
            f"linear probe: {type(model).__name__} has no image-only tower "
            "(CLIP, MAECLIP and MAE have one; M3AE's encoder is shared with text)."
        )
    return encoder


def feature_extractor(model, pooling=None):
    """A functional model: preprocessed images → pooled encoder features.

    Args:
        model: a `CLIP`, `MAECLIP` or `MAE` task (its encoder is shared,
            not copied).
        pooling: `None` for the model's own image pooler (CLIP, MAE-CLIP;
            GAP for MAE, which has none), or `"gap"`, `"max"`, `"first"`
            over the encoder's output tokens (`"first"` is the class token
            when there is one, else the first patch), or `"map"`: the patch
            tokens themselves, for a MAP head trained by the probe.

    Returns:
        A `keras.Model`, features `(batch, hidden_dim)` before any
        projection into the joint space (`(batch, patches, hidden_dim)`
        for `"map"`).
    """
    if pooling is not None and pooling not in PROBE_POOLINGS:
        raise ValueError(f"Unknown pooling={pooling!r}; use None (the model's own) or one of {PROBE_POOLINGS}.")
    encoder = _image_encoder(model)
    images = keras.Input(shape=(encoder.image_size, encoder.image_size, encoder.num_channels), name="images")
    tokens = encoder(images)
    own_pooler = getattr(model.backbone, "image_pooler", None)
    if pooling is None and own_pooler is not None:
        if encoder.use_class_token and model.backbone.image_pooling != "first":
            tokens = tokens[:, 1:]
        features = own_pooler(tokens)
    elif pooling == "first":
        features = tokens[:, 0]
    elif pooling == "map":
        features = tokens[:, 1:] if encoder.use_class_token else tokens
    else:
        if encoder.use_class_token:
            tokens = tokens[:, 1:]
        features = ops.max(tokens, axis=1) if pooling == "max" else ops.mean(tokens, axis=1)
    return keras.Model(images, features, name="feature_extractor")


def image_features(model, images, pooling=None, batch_size=256):
    """Pooled features of raw images, through the model's preprocessing.

    Args:
        model: see `feature_extractor`.
        images: uint8/float array `(n, H, W, 3)` in [0, 255].
        pooling: see `feature_extractor`.
        batch_size: int, images per forward pass.

    Returns:
        float32 array `(n, hidden_dim)`.
    """
    from keras_maeclip.models import image_converter

    encoder = _image_encoder(model)
    images = np.asarray(images)
    if model.preprocessor is not None:
        pixels = model.preprocessor({"images": images})["images"]
    else:
        pixels = image_converter(encoder.image_size)(images.astype("float32"))
    extractor = feature_extractor(model, pooling)
    out = extractor.predict(ops.convert_to_numpy(pixels), batch_size=batch_size, verbose=0)
    return np.asarray(out, np.float32)


def train_linear_probe(features, labels, num_classes, epochs=30, learning_rate=1e-2,
                       batch_size=256, seed=0, num_heads=1):
    """Fit a non-affine standardisation + Dense on cached features with `fit`.

    The standardisation is a `keras.layers.Normalization` adapted to the
    training features: the statistics a BatchNorm without affine parameters
    converges to. (A BatchNorm layer would predict with moving averages
    that, for a head trained for tens of steps, are still near their
    initial values — the probe then collapses to one class at test time.)

    With token features `(n, tokens, dim)` (`pooling="map"`) the tokens
    are standardised the same way and a fresh MAP head
    (`TokenPooling("map")`) is trained before the Dense layer: MAP probing
    as big_vision does it; the probe is then no longer purely linear.

    Args:
        features: float array `(n, dim)`, or `(n, tokens, dim)` for a MAP
            head.
        labels: int array `(n,)` in `[0, num_classes)`.
        num_classes: int.
        epochs, learning_rate, batch_size: the head's training (Adam).
        seed: int, seeds the head's initialisation.
        num_heads: int, attention heads of the MAP head (token features
            only); must divide `dim`.

    Returns:
        The trained head, a `keras.Sequential` from features to logits.

    References: MAE (He et al. 2022) §A.3, linear probing with a
    BatchNorm without affine parameters before the linear classifier.
    """
    features = np.asarray(features, np.float32)
    labels = np.asarray(labels).reshape(-1)
    if len(features) != len(labels) or len(labels) == 0:
        raise ValueError(f"linear probe: {len(features)} feature rows but {len(labels)} labels.")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"linear probe: labels must lie in [0, {num_classes}); got {labels.min()}..{labels.max()}.")
    if features.ndim not in (2, 3):
        raise ValueError(f"linear probe: features must be (n, dim) or (n, tokens, dim); got {features.shape}.")
    standardise = keras.layers.Normalization(axis=-1, name="standardise")
    standardise.adapt(features)
    pool = []
    if features.ndim == 3:
        from keras_maeclip.layers import TokenPooling

        pool = [TokenPooling("map", num_heads=num_heads, name="map_head")]
    head = keras.Sequential(
        [
            keras.Input(shape=features.shape[1:]),
            standardise,
            *pool,
            keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.GlorotUniform(seed)),
        ],
        name="linear_probe",
    )
    head.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    head.fit(features, labels, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0)
    return head


def linear_probe(model, train_images, train_labels, test_images, test_labels, num_classes=None,
                 pooling=None, top_k=(1, 5), **head_kwargs):
    """Linear-probe accuracy of a model's frozen image features.

    Features are computed once (cached) for both splits; only the head
    trains.

    Args:
        model: a `CLIP`, `MAECLIP` or `MAE` task.
        train_images, test_images: raw image arrays `(n, H, W, 3)`.
        train_labels, test_labels: int arrays.
        num_classes: int or `None` (1 + the largest label seen).
        pooling: see `feature_extractor`.
        top_k: accuracies to report.
        **head_kwargs: `train_linear_probe` arguments.

    Returns:
        dict `{"top1": ..., "top5": ...}` on the test split.
    """
    train = image_features(model, train_images, pooling)
    test = image_features(model, test_images, pooling)
    if num_classes is None:
        num_classes = int(max(np.max(train_labels), np.max(test_labels))) + 1
    if pooling == "map":
        head_kwargs.setdefault("num_heads", _image_encoder(model).num_heads)
    head = train_linear_probe(train, train_labels, num_classes, **head_kwargs)
    scores = head.predict(test, batch_size=1024, verbose=0)
    return top_k_accuracy(scores, test_labels, top_k)
