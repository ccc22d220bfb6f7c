"""M3AE: masked multimodal autoencoding of image-text pairs, trained with `model.fit`."""

import keras
from keras import ops

from keras_maeclip.layers import random_masking, text_masking
from keras_maeclip.losses import pixel_reconstruction_loss, token_reconstruction_loss
from keras_maeclip.models._validation import check_images
from keras_maeclip.models.cross_modal_decoder import CrossModalDecoder
from keras_maeclip.models.m3ae_backbone import M3AEBackbone
from keras_maeclip.models.preprocessor import ImageTextPreprocessor, resolve_text_mask_ids
from keras_maeclip.models.presets import build_m3ae_parts
from keras_maeclip.models.pretraining_task import PretrainingTask
from keras_maeclip.models._preset_listing import named_presets

_INPUT_KEYS = ("images", "token_ids", "padding_mask")


@keras.saving.register_keras_serializable(package="keras_maeclip")
class M3AE(PretrainingTask):
    """Multimodal masked autoencoder: one shared encoder, one cross-modal decoder.

    Per pair, `image_mask_ratio` of the patches are dropped by
    `random_masking` after the position and type embeddings, so only the
    kept patches enter the encoder (MAE's compute saving), and
    `text_mask_ratio` of each caption's real, non-special tokens are
    replaced by `[MASK]` (`text_masking`; padding and special tokens are
    never masked). The `M3AEBackbone` encodes the kept patches and the
    whole (masked) caption as one sequence; a `CrossModalDecoder` fills
    image mask tokens back in, swaps its own text mask token in at the
    masked text positions, and predicts every patch's pixels and every
    token's id. The loss is
    `image_loss_weight · pixel MSE on masked patches (norm_pix_loss)
    + text_loss_weight · cross-entropy on masked tokens`.

    Text masking differs from M3AE's own code on purpose: there, masked
    tokens are *dropped* from the encoder's input (like image patches);
    here they are *replaced* by `[MASK]` (BERT-style). Replacing keeps the
    text length static per batch — a per-caption count of eligible tokens
    would otherwise give ragged kept-token counts, which do not trace under
    `jit` on every backend — and it lets M3AE share the
    `text_masking` / `CrossModalDecoder` interface with MAE-CLIP. The
    encoder still never sees the masked tokens' ids.

    `fit` takes preprocessed `{"images", "token_ids", "padding_mask"}`
    batches, or raw `{"images", "captions"}` ones when an `ImageTextPreprocessor`
    is set. Calling the model returns `{"pixels": (batch, patches, p²·C)
    predictions (normalised per patch when `norm_pix_loss`), "image_mask":
    float32, 1 = masked, "token_logits": (batch, length, vocabulary),
    "text_mask": bool, true = masked, "text_targets": the original ids}`.

    Args:
        backbone: an `M3AEBackbone`.
        decoder: a `CrossModalDecoder` with a text head, for the backbone's
            patch grid, vocabulary and sequence length.
        image_mask_ratio: float in [0, 1), defaults to `0.75` (M3AE's).
        text_mask_ratio: float in [0, 1], defaults to `0.75` (M3AE's).
        image_loss_weight: float, defaults to `1.0` (M3AE's code).
        text_loss_weight: float, defaults to `0.1` (M3AE's code).
        norm_pix_loss: bool, defaults to `True`.
        mask_token_id: int or `None`. Id of `[MASK]`; `None` takes it from
            `text_mask_ids(preprocessor.tokenizer)` (or `text_mask_ids()`
            without a preprocessor: the `learn_vocabulary` layout).
        special_token_ids: ints or `None`. Ids never masked; `None` as for
            `mask_token_id`.
        seed: int or `None`, seeds the image and text masking noise.
        preprocessor: optional `ImageTextPreprocessor`.
        compile: bool. Compile with the defaults of `compile()`.
        **kwargs: `keras_hub.models.Task` arguments.

    Example:
    >>> model = M3AE.from_preset("m3ae_tiny", vocabulary_size=64)
    >>> batch = {"images": np.zeros((4, 32, 32, 3), "float32"),
    ...          "token_ids": np.full((4, 16), 7, "int32"),
    ...          "padding_mask": np.ones((4, 16), "int32")}
    >>> history = model.fit(batch, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['image_reconstruction_loss', 'loss', 'text_reconstruction_loss']

    References: Geng et al. 2022 (M3AE) §3 and `m3ae/model.py`,
    `m3ae/m3ae_main.py` (mask ratios, loss weights); He et al. 2022 (MAE);
    Weers et al. 2023 §3.
    """

    presets = named_presets("M3AE_PRESETS")

    backbone_cls = M3AEBackbone
    preprocessor_cls = ImageTextPreprocessor
    # Task arguments that `from_preset` separates from architecture overrides.
    task_keys = PretrainingTask.task_keys + (
        "image_mask_ratio", "text_mask_ratio", "image_loss_weight", "text_loss_weight",
        "norm_pix_loss", "mask_token_id", "special_token_ids", "seed",
    )
    text_overrides = "encoder"

    def __init__(
        self,
        backbone,
        decoder,
        image_mask_ratio=0.75,
        text_mask_ratio=0.75,
        image_loss_weight=1.0,
        text_loss_weight=0.1,
        norm_pix_loss=True,
        mask_token_id=None,
        special_token_ids=None,
        seed=None,
        preprocessor=None,
        compile=True,
        **kwargs,
    ):
        super().__init__(
            metric_names=("image_reconstruction_loss", "text_reconstruction_loss"), **kwargs
        )
        _check_decoder(backbone, decoder)
        mask_token_id, special_token_ids = resolve_text_mask_ids(
            preprocessor, backbone.vocabulary_size, mask_token_id, special_token_ids
        )
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.decoder = decoder
        self.image_mask_ratio = image_mask_ratio
        self.text_mask_ratio = text_mask_ratio
        self.image_loss_weight = image_loss_weight
        self.text_loss_weight = text_loss_weight
        self.norm_pix_loss = norm_pix_loss
        self.mask_token_id = mask_token_id
        self.special_token_ids = special_token_ids
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.dtype_policy = backbone.dtype_policy
        if not self.decoder.built:
            self.decoder.build((None, None, backbone.hidden_dim))
        self.built = True
        if compile:
            self.compile()

    def call(self, inputs, training=False):
        backbone = self.backbone
        _check_inputs(inputs, backbone)
        images = inputs["images"]
        padding_mask = inputs["padding_mask"]
        check_images(images, backbone.image_size, backbone.num_channels)
        image = random_masking(
            backbone.embed_patches(images), self.image_mask_ratio, self.seed_generator
        )
        text = text_masking(
            inputs["token_ids"], padding_mask, self.text_mask_ratio, self.mask_token_id,
            self.special_token_ids, self.seed_generator,
        )
        image_tokens, text_tokens = backbone.encode_tokens(
            image["kept"], backbone.embed_tokens(text["token_ids"]), padding_mask,
            training=training,
        )
        out = self.decoder(
            image_tokens, image["ids_restore"], text_tokens, text["mask"], padding_mask
        )
        return {
            "pixels": out["pixels"],
            "image_mask": ops.cast(image["mask"], "float32"),
            "token_logits": out["token_logits"],
            "text_mask": text["mask"],
            "text_targets": text["targets"],
        }

    @property
    def patch_size(self):
        """Side of an image patch, in pixels."""
        return self.backbone.patch_size

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        image_loss = pixel_reconstruction_loss(
            x["images"], y_pred["pixels"], y_pred["image_mask"], self.patch_size,
            self.norm_pix_loss,
        )
        text_loss = token_reconstruction_loss(
            y_pred["text_targets"], y_pred["token_logits"], y_pred["text_mask"]
        )
        batch_size = ops.shape(y_pred["pixels"])[0]
        self.track("image_reconstruction_loss", image_loss, batch_size)
        self.track("text_reconstruction_loss", text_loss, batch_size)
        return self.total_loss(
            self.image_loss_weight * image_loss + self.text_loss_weight * text_loss
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_mask_ratio": self.image_mask_ratio,
                "text_mask_ratio": self.text_mask_ratio,
                "image_loss_weight": self.image_loss_weight,
                "text_loss_weight": self.text_loss_weight,
                "norm_pix_loss": self.norm_pix_loss,
                "mask_token_id": self.mask_token_id,
                "special_token_ids": list(self.special_token_ids),
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def build_parts(cls, preset, **overrides):
        backbone, decoder = build_m3ae_parts(preset, **overrides)
        return {"backbone": backbone, "decoder": decoder}

def _check_decoder(backbone, decoder):
    if decoder.num_patches != backbone.num_patches or decoder.patch_size != backbone.patch_size:
        raise ValueError(
            f"The decoder's grid ({decoder.num_patches} patches of "
            f"{decoder.patch_size}px) must match the encoder's "
            f"({backbone.num_patches} of {backbone.patch_size}px)."
        )
    if not decoder.has_text or decoder.vocabulary_size != backbone.vocabulary_size:
        raise ValueError(
            f"The decoder's text head (vocabulary_size={decoder.vocabulary_size}) "
            f"must match the encoder's vocabulary_size={backbone.vocabulary_size}."
        )
    if decoder.sequence_length < backbone.sequence_length:
        raise ValueError(
            f"The decoder's sequence_length={decoder.sequence_length} must cover "
            f"the encoder's {backbone.sequence_length}."
        )


def _check_inputs(inputs, backbone):
    """One-line errors for a batch that is not `{images, token_ids, padding_mask}`."""
    if not isinstance(inputs, dict) or not set(_INPUT_KEYS) <= set(inputs):
        got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
        raise ValueError(
            f"M3AE expects a dict with {list(_INPUT_KEYS)}; got {got}. Run raw "
            "{'images', 'captions'} batches through the ImageTextPreprocessor "
            "(or set model.preprocessor)."
        )
    length = inputs["token_ids"].shape[-1]
    if length is not None and length > backbone.sequence_length:
        raise ValueError(
            f"token_ids have {length} tokens but the model covers "
            f"sequence_length={backbone.sequence_length}; tokenize with a "
            "shorter sequence_length or build the model with a longer one."
        )
