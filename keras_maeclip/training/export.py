"""Export the image and text embedders for inference with Keras' `model.export`.

    python -m keras_maeclip.training.export runs/clip_tiny_gap/preset exported/

writes an image embedder (preprocessed images `(batch, S, S, C)` →
unit-norm embeddings) and a text embedder (`token_ids`, `padding_mask`
`(batch, sequence_length)` int32, the tower's caption length → unit-norm
embeddings), any batch size, in the current backend's format:

- JAX and TensorFlow: TF SavedModels `exported/image_embedder/` and
  `exported/text_embedder/`, each served by its `serve` endpoint:

      import tensorflow as tf
      image = tf.saved_model.load("exported/image_embedder")
      embeddings = image.serve(images)

- torch: PyTorch ExportedPrograms `exported/image_embedder.pt2` and
  `exported/text_embedder.pt2`:

      import torch
      image = torch.export.load("exported/image_embedder.pt2").module()
      embeddings = image(images)

A preset loads on every backend, so `KERAS_BACKEND=tensorflow python -m
keras_maeclip.training.export ...` gives SavedModels from a run trained on
torch, and `KERAS_BACKEND=torch` gives `.pt2` files from any run.

On JAX the SavedModel holds jax2tf's native serialization (StableHLO),
Keras' default, which TensorFlow >= 2.21 reads (TF 2.16 could not read the
batch-polymorphic gather, `vhlo.dynamic_gather_v2`, and needed the
deprecated graph serialization). ONNX needs `onnx` / `tf2onnx` / `onnxscript`, which the pinned
stack does not carry; `tf_saved_model` on torch needs `torch_xla` (not
pinned either).
"""

import os

FORMATS = {"jax": "tf_saved_model", "tensorflow": "tf_saved_model", "torch": "torch"}
_TEXT_KEYS = ("token_ids", "padding_mask")


def default_format():
    """The export format of the current backend (`FORMATS`)."""
    import keras

    return FORMATS[keras.config.backend()]


def export_embedders(model, directory, format=None, verbose=False):
    """Write the image and text embedders of a CLIP-style model.

    Args:
        model: a `CLIP`, `MAECLIP` or `ImageTextBackbone`.
        directory: str. Gets the two embedders (names below).
        format: str, a `keras.Model.export` format. Defaults to the
            backend's: `"tf_saved_model"` on JAX and TensorFlow (folders
            `image_embedder/`, `text_embedder/`), `"torch"` on torch
            (`image_embedder.pt2`, `text_embedder.pt2`).
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

    backend = keras.config.backend()
    format = format or default_format()
    if backend == "torch" and format == "tf_saved_model":
        raise ValueError(
            "format='tf_saved_model' on the torch backend needs torch_xla, which the pinned "
            "stack does not carry. Use format='torch' (a .pt2 ExportedProgram), or export the "
            "saved preset with KERAS_BACKEND=tensorflow (or jax): python -m "
            "keras_maeclip.training.export <preset> <output>."
        )
    # Captions are exported at the tower's fixed length: jax2tf cannot
    # trace the position table's slice for a symbolic length.
    length = getattr(backbone.text_encoder, "sequence_length", None)
    text_signature = [{key: keras.InputSpec(shape=(None, length), dtype="int32") for key in _TEXT_KEYS}]
    paths = {}
    for name, embedder, signature in (
        ("image_embedder", backbone.image_embedder(), None),
        ("text_embedder", backbone.text_embedder(), text_signature),
    ):
        path = os.path.join(directory, name + (".pt2" if format == "torch" else ""))
        os.makedirs(directory, exist_ok=True)
        kwargs = _format_kwargs(backend, format, text=signature is not None)
        embedder.export(path, format=format, verbose=verbose, input_signature=signature, **kwargs)
        paths[name] = path
    return paths


def _format_kwargs(backend, format, text):
    """What `model.export` needs beyond the defaults, per backend and format."""
    if format == "torch":
        import torch

        # Any batch size (torch.export fixes every dimension not named here).
        batch = torch.export.Dim("batch", min=1, max=1 << 16)
        if text:
            return {"dynamic_shapes": [({key: {0: batch} for key in _TEXT_KEYS},)]}
        return {"dynamic_shapes": {0: batch}}
    return {}


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("preset", help="a preset directory saved by the pretrain recipe")
    parser.add_argument("output", help="directory for the image and text embedders")
    parser.add_argument(
        "--format", default=None,
        help="keras.Model.export format (default: tf_saved_model on jax/tensorflow, torch on torch)",
    )
    args = parser.parse_args(argv)
    from keras_maeclip.models import ImageTextBackbone

    backbone = ImageTextBackbone.from_preset(args.preset)
    try:
        paths = export_embedders(backbone, args.output, args.format)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
