"""Export the image and text embedders for inference with Keras' `model.export`.

    python -m keras_maeclip.training.export runs/clip_tiny_gap/preset exported/

writes `exported/image_embedder` (preprocessed images `(batch, S, S, C)`
→ unit-norm embeddings) and `exported/text_embedder` (`token_ids`,
`padding_mask` `(batch, sequence_length)` int32, the tower's caption
length → unit-norm embeddings) as TF
SavedModels, each served by its `serve` endpoint:

    import tensorflow as tf
    image = tf.saved_model.load("exported/image_embedder")
    embeddings = image.serve(images)

The export uses `keras.Model.export(format="tf_saved_model")`: native on
the TensorFlow backend (tested); `jax2tf` on JAX does not export these
embedders yet. ONNX and the other
formats Keras offers need packages the pinned stack does not carry.
"""

import os


def export_embedders(model, directory, format="tf_saved_model", verbose=False):
    """Write the image and text embedders of a CLIP-style model.

    Args:
        model: a `CLIP`, `MAECLIP` or `ImageTextBackbone`.
        directory: str. Gets `image_embedder/` and `text_embedder/`.
        format: str, a `keras.Model.export` format. Defaults to
            `"tf_saved_model"`.
        verbose: bool, Keras' export messages. Defaults to `False`.

    Returns:
        A dict `{"image_embedder": path, "text_embedder": path}`.

    Example:
    >>> from keras_maeclip.models import CLIP
    >>> model = CLIP.from_preset("clip_tiny_gap", vocabulary_size=64)
    >>> paths = export_embedders(model, "/tmp/exported")  # doctest: +SKIP

    References: `keras.Model.export`; open_clip's image / text encoders
    used apart for retrieval indexes.
    """
    backbone = getattr(model, "backbone", model)
    if not hasattr(backbone, "image_embedder"):
        raise ValueError(
            "export_embedders needs a CLIP-style model or backbone (CLIP, MAECLIP, "
            f"ImageTextBackbone); got {type(model).__name__}."
        )
    import keras

    # Captions are exported at the tower's fixed length: jax2tf cannot
    # trace the position table's slice for a symbolic length.
    length = getattr(backbone.text_encoder, "sequence_length", None)
    text_signature = [{
        key: keras.InputSpec(shape=(None, length), dtype="int32")
        for key in ("token_ids", "padding_mask")
    }]
    paths = {}
    for name, embedder, signature in (
        ("image_embedder", backbone.image_embedder(), None),
        ("text_embedder", backbone.text_embedder(), text_signature),
    ):
        path = os.path.join(directory, name)
        embedder.export(path, format=format, verbose=verbose, input_signature=signature)
        paths[name] = path
    return paths


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("preset", help="a preset directory saved by the pretrain recipe")
    parser.add_argument("output", help="directory for image_embedder/ and text_embedder/")
    parser.add_argument("--format", default="tf_saved_model", help="keras.Model.export format")
    args = parser.parse_args(argv)
    from keras_maeclip.models import ImageTextBackbone

    backbone = ImageTextBackbone.from_preset(args.preset)
    for name, path in export_embedders(backbone, args.output, args.format).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
