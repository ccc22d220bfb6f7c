"""Two towers, pooling and projections into the joint embedding space."""

import keras
import keras_hub
from keras import ops

from keras_maeclip.layers import POOLING_MODES, TokenPooling
from keras_maeclip.losses import l2_normalize
from keras_maeclip.models._validation import check_images, check_positive
from keras_maeclip.models.text_encoder import TextEncoder
from keras_maeclip.models.vit_encoder import ViTEncoder
from keras_maeclip.models._preset_listing import named_presets


@keras.saving.register_keras_serializable(package="keras_maeclip")
class ImageTextBackbone(keras_hub.models.Backbone):
    """Image tower + text tower + pooling + bias-free projections.

    The backbone of `CLIP` and `MAECLIP`. Not keras-hub's
    `keras_hub.models.CLIPBackbone` (OpenAI CLIP's architecture); named
    apart so the two cannot be mistaken in code or in loader errors. It was
    called `CLIPBackbone` before; that name stays importable from
    `keras_maeclip.models` as an alias, and presets saved under it load as
    this class.

    Each tower's token sequence is pooled (`"map"`, `"gap"`, `"max"` or
    `"first"`; text pooling ignores padding), projected without bias to
    `embedding_dim` and L2-normalised (in float32).

    When the image encoder has a class token, `"first"` pooling uses it and
    the other modes pool the patch tokens only.

    Args:
        image_encoder: an image tower: a `ViTEncoder`, or a keras-hub
            `ViTBackbone` in a `HubViTTower`.
        text_encoder: a text tower: a `TextEncoder`, or a keras-hub
            `BertBackbone` in a `HubBertTower`.
        embedding_dim: int. Width of the joint embedding space.
        image_pooling: str, defaults to `"gap"`.
        text_pooling: str, defaults to `"gap"`.
        dtype: dtype policy of the heads (towers keep their own).
        **kwargs: `keras_hub.models.Backbone` arguments.

    Inputs: dict with `images` `(batch, S, S, C)`, `token_ids` and
    `padding_mask` `(batch, length)`.
    Outputs: dict with `image_embeddings` and `text_embeddings`,
    `(batch, embedding_dim)`, unit norm.

    Example:
    >>> backbone = ImageTextBackbone.from_preset("clip_tiny_gap", vocabulary_size=64)
    >>> out = backbone({"images": np.zeros((2, 32, 32, 3)),
    ...                 "token_ids": np.ones((2, 16), "int32"),
    ...                 "padding_mask": np.ones((2, 16), "int32")})
    >>> out["image_embeddings"].shape
    (2, 96)

    References: Radford et al. 2021 (CLIP); Weers et al. 2023 §3 and §4
    (pooling ablation).
    """

    presets = named_presets("CLIP_PRESETS")

    def __init__(
        self,
        image_encoder,
        text_encoder,
        embedding_dim,
        image_pooling="gap",
        text_pooling="gap",
        dtype=None,
        **kwargs,
    ):
        check_positive(embedding_dim=embedding_dim)
        for name, mode in (("image_pooling", image_pooling), ("text_pooling", text_pooling)):
            if mode not in POOLING_MODES:
                raise ValueError(f"Unknown {name}={mode!r}; use one of {POOLING_MODES}.")
        if image_pooling == "first" and not image_encoder.use_class_token:
            raise ValueError(
                "image_pooling='first' needs an image encoder with "
                "use_class_token=True; use 'gap', 'max' or 'map' otherwise."
            )

        # === Layers ===
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_pooler = TokenPooling(
            image_pooling, num_heads=image_encoder.num_heads, dtype=dtype, name="image_pooler"
        )
        self.text_pooler = TokenPooling(
            text_pooling, num_heads=text_encoder.num_heads, dtype=dtype, name="text_pooler"
        )
        self.image_projection = keras.layers.Dense(
            embedding_dim, use_bias=False, dtype=dtype, name="image_projection"
        )
        self.text_projection = keras.layers.Dense(
            embedding_dim, use_bias=False, dtype=dtype, name="text_projection"
        )
        # Read by the helper methods below, which the functional graph uses.
        self._image_pooling = image_pooling
        self._strip_class_token = image_encoder.use_class_token and image_pooling != "first"

        # === Functional model ===
        inputs = {
            "images": keras.Input(
                shape=(image_encoder.image_size, image_encoder.image_size, image_encoder.num_channels),
                name="images",
            ),
            "token_ids": keras.Input(shape=(None,), dtype="int32", name="token_ids"),
            "padding_mask": keras.Input(shape=(None,), dtype="int32", name="padding_mask"),
        }
        image_tokens = self.image_encoder(inputs["images"])
        text_tokens = self.text_encoder(
            {"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]}
        )
        outputs = {
            "image_embeddings": self.embed_image_tokens(image_tokens),
            "text_embeddings": self.embed_text_tokens(text_tokens, inputs["padding_mask"]),
        }
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        # === Config ===
        self.embedding_dim = embedding_dim
        self.image_pooling = image_pooling
        self.text_pooling = text_pooling

    def embed_image_tokens(self, tokens):
        """Pool, project and L2-normalise image tokens → `(batch, dim)`."""
        if self._strip_class_token:
            tokens = tokens[:, 1:]
        return l2_normalize(self.image_projection(self.image_pooler(tokens)))

    def embed_patch_tokens(self, tokens, normalize=True):
        """Each patch token on its own in the joint space → `(batch, patches, dim)`.

        The dense counterpart of `embed_image_tokens`: every patch token
        (the class token, if the encoder has one, is dropped whatever the
        pooling) goes through the image pooling head as a sequence of
        length one, then the image projection and, with `normalize`, L2
        normalisation. For GAP, MAX and `"first"` the head is the identity
        on one token; for MAP its probe attends to that token alone, so the
        head reduces to the attention's value and output projections plus
        its residual MLP (the MaskCLIP-style reuse of the pooling head's
        value path). This is the one definition of a patch's embedding:
        MAE-CLIP's similarity masking scores patches with it and
        `keras_maeclip.evaluation.dense` (grounding, segmentation) embeds
        patches with it.

        Args:
            tokens: the image encoder's output `(batch, [1 +] patches,
                width)`, class token first if the encoder has one.
            normalize: bool. `True` (default) returns unit vectors
                (float32); `False` the projections before normalisation
                (cast to float32).

        Returns:
            float32 tensor `(batch, patches, embedding_dim)`, in the
            encoder's patch order (row by row).

        Example:
        >>> backbone = CLIPBackbone.from_preset("clip_tiny_map", vocabulary_size=64)
        >>> tokens = backbone.image_encoder(np.zeros((2, 32, 32, 3)))
        >>> backbone.embed_patch_tokens(tokens).shape
        (2, 64, 96)

        References: Zhou et al. 2022 (MaskCLIP, dense CLIP features);
        Weers et al. 2023 §5 and Appendix F.
        """
        if self.image_encoder.use_class_token:
            tokens = tokens[:, 1:]
        length, width = tokens.shape[1], tokens.shape[2]
        single = ops.reshape(tokens, (-1, 1, width))
        projected = self.image_projection(self.image_pooler(single))
        projected = l2_normalize(projected) if normalize else ops.cast(projected, "float32")
        return ops.reshape(projected, (-1, length, self.embedding_dim))

    def embed_text_tokens(self, tokens, padding_mask):
        """Pool (ignoring padding), project and L2-normalise text tokens."""
        pooled = self.text_pooler(tokens, padding_mask=padding_mask)
        return l2_normalize(self.text_projection(pooled))

    def encode_images(self, images):
        """Unit-norm image embeddings for a batch of preprocessed images."""
        encoder = self.image_encoder
        check_images(images, encoder.image_size, encoder.num_channels)
        return self.embed_image_tokens(encoder(images))

    def encode_text(self, token_ids, padding_mask):
        """Unit-norm text embeddings for a batch of token ids."""
        tokens = self.text_encoder({"token_ids": token_ids, "padding_mask": padding_mask})
        return self.embed_text_tokens(tokens, padding_mask)

    def image_embedder(self):
        """A functional model: preprocessed images → unit-norm embeddings.

        Shares this backbone's layers (no copy); built once and cached, so
        `image_embedder().predict(...)` runs compiled on every backend.
        """
        if getattr(self, "_image_embedder", None) is None:
            encoder = self.image_encoder
            images = keras.Input(
                shape=(encoder.image_size, encoder.image_size, encoder.num_channels), name="images"
            )
            self._image_embedder = keras.Model(
                images, self.embed_image_tokens(self.image_encoder(images))
            )
        return self._image_embedder

    def text_embedder(self):
        """A functional model: `{token_ids, padding_mask}` → unit-norm embeddings."""
        if getattr(self, "_text_embedder", None) is None:
            inputs = {
                "token_ids": keras.Input(shape=(None,), dtype="int32", name="token_ids"),
                "padding_mask": keras.Input(shape=(None,), dtype="int32", name="padding_mask"),
            }
            self._text_embedder = keras.Model(
                inputs, self.embed_text_tokens(self.text_encoder(inputs), inputs["padding_mask"])
            )
        return self._text_embedder

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_encoder": keras.layers.serialize(self.image_encoder),
                "text_encoder": keras.layers.serialize(self.text_encoder),
                "embedding_dim": self.embedding_dim,
                "image_pooling": self.image_pooling,
                "text_pooling": self.text_pooling,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("image_encoder", "text_encoder"):
            if isinstance(config.get(key), dict):
                config[key] = keras.layers.deserialize(config[key])
        return super().from_config(config)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Build from a named architecture preset or load a preset directory.

        Args:
            preset: a name from `keras_maeclip.models.list_presets()` (an
                architecture, randomly initialised: no pretrained weights
                ship with the library) or a local directory written by
                `save_to_preset`.
            load_weights: bool. For a directory, whether to load its weights.
            **kwargs: config overrides for a named preset (e.g.
                `vocabulary_size=`, `image_size=`, `image_pooling=`), or
                keras-hub loader arguments for a directory, plus `image_size=`
                to load it at another resolution (positions follow the grid).
        """
        from keras_maeclip.models.presets import build_clip_backbone, is_directory_preset

        if is_directory_preset(preset):
            from keras_maeclip.models.resolution import load_at_image_size

            return load_at_image_size(super().from_preset, preset, load_weights, **kwargs)
        return build_clip_backbone(preset, **kwargs)


# Its name before the rename: importable, and presets whose config.json says
# "keras_maeclip>CLIPBackbone" deserialise to this class (an extra key, in
# this package's own namespace, of Keras' public custom-object dict).
CLIPBackbone = ImageTextBackbone
keras.saving.get_custom_objects()["keras_maeclip>CLIPBackbone"] = ImageTextBackbone
