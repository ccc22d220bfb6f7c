"""CLIP: contrastive image–text pretraining, trained with `model.fit`."""

import math

import keras
from keras import ops

from keras_maeclip.layers import random_masking
from keras_maeclip.losses import ContrastiveLoss
from keras_maeclip.losses.contrastive import SIGLIP_INIT_LOGIT_BIAS
from keras_maeclip.models._validation import (
    check_images,
    check_logit_scale,
    check_part,
    check_token_ids,
    check_tokenizer_fits,
)
from keras_maeclip.models.clip_backbone import ImageTextBackbone
from keras_maeclip.models.preprocessor import ImageTextPreprocessor
from keras_maeclip.models.pretraining_task import NO_DECAY_PARTS, PretrainingTask
from keras_maeclip.models._preset_listing import named_presets

CONTRASTIVE_METRICS = (
    "contrastive_loss",
    "logit_scale",
    "uses_local_negatives",
    "image_to_text_accuracy",
    "text_to_image_accuracy",
)


@keras.saving.register_keras_serializable(package="keras_maeclip")
class CLIP(PretrainingTask):
    """Contrastive language–image pretraining (keras-hub `Task`).

    An `ImageTextBackbone` (two towers, pooling, bias-free projections) plus the
    symmetric InfoNCE loss with a learned temperature, or with
    `loss="sigmoid"` SigLIP's pairwise sigmoid loss (learned temperature
    and bias; the logs then also report `logit_bias`). `fit` trains it
    through the `compute_loss` override on every backend; the logs report
    `loss` (total), `contrastive_loss`, `logit_scale`, `uses_local_negatives`
    (share of the epoch's steps with local negatives) and the in-batch
    top-1 `image_to_text_accuracy` / `text_to_image_accuracy`.

    Args:
        backbone: an `ImageTextBackbone`.
        preprocessor: an `ImageTextPreprocessor` or `None`. With one, `fit` accepts
            raw `{"images", "captions"}` batches.
        negatives: `"global"` (all pairs in the batch) or `"local"`
            (negatives only inside blocks of `local_batch_size`). Defaults
            to `"global"`.
        local_batch_size: int or `None`, the block size for `"local"`.
        local_steps: int or `None`. With `negatives="global"`, use local
            negatives for this many training steps first (paper: 10,000).
        init_logit_scale: float or `None`, initial log-temperature scale;
            `None` is `ln(1/0.07)` for softmax and `ln 10` for sigmoid.
        max_logit_scale: float, clamp of the log-scale, `ln(100)`.
        loss: `"softmax"` (CLIP's InfoNCE, default) or `"sigmoid"` (SigLIP).
        init_logit_bias: float, initial bias of the sigmoid loss, `-10`.
        patch_dropout: float in `[0, 1)`. FLIP: share of the image patches
            dropped at random in each training step (the image tower
            encodes only the kept ones); evaluation and inference see every
            patch. Defaults to `0.0`. `set_patch_dropout(0.0)` switches it
            off for an unmasked tuning phase.
        seed: int or `None`, seeds the patch dropout.
        compile: bool. Compile with the defaults of `compile()`.
        **kwargs: `keras_hub.models.Task` arguments (`name`, ...).

    Example:
    >>> model = CLIP.from_preset("clip_tiny_gap", vocabulary_size=64)
    >>> batch = {"images": np.zeros((4, 32, 32, 3), "float32"),
    ...          "token_ids": np.ones((4, 16), "int32"),
    ...          "padding_mask": np.ones((4, 16), "int32")}
    >>> history = model.fit(batch, epochs=1, verbose=0)

    References: Radford et al. 2021 (CLIP); Weers et al. 2023 §3; Li et al.
    2023 (FLIP) §3 (patch dropout, unmasked tuning); Zhai et al. 2023
    (SigLIP).
    """

    presets = named_presets("CLIP_PRESETS")

    backbone_cls = ImageTextBackbone
    preprocessor_cls = ImageTextPreprocessor
    # Task arguments that `from_preset` separates from architecture overrides.
    task_keys = PretrainingTask.task_keys + (
        "negatives", "local_batch_size", "local_steps", "init_logit_scale", "max_logit_scale",
        "loss", "init_logit_bias", "patch_dropout", "seed",
    )
    text_overrides = "text_encoder"
    # compile(): CLIP's AdamW (Radford et al. 2021: β=(0.9, 0.98), ε=1e-6,
    # decay 0.2). Decayed: every kernel and the token embedding table (CLIP
    # decays "all weights that are not gains or biases"; open_clip too).
    # Not decayed: biases, norms, the temperature, position tables, class
    # tokens and the MAP probe (big_vision decays kernels only).
    optimizer_defaults = PretrainingTask.optimizer_defaults
    no_decay_parts = NO_DECAY_PARTS

    def __init__(
        self,
        backbone,
        preprocessor=None,
        negatives="global",
        local_batch_size=None,
        local_steps=None,
        init_logit_scale=None,
        max_logit_scale=math.log(100.0),
        loss="softmax",
        init_logit_bias=SIGLIP_INIT_LOGIT_BIAS,
        patch_dropout=0.0,
        seed=None,
        compile=True,
        **kwargs,
    ):
        check_part(type(self).__name__, "backbone", backbone, ImageTextBackbone)
        check_part(type(self).__name__, "preprocessor", preprocessor, keras.layers.Layer)
        vocabulary_size = getattr(backbone.text_encoder, "vocabulary_size", None)
        if vocabulary_size is not None:
            check_tokenizer_fits(preprocessor, vocabulary_size, type(self).__name__)
        check_logit_scale(init_logit_scale, max_logit_scale)
        metric_names = tuple(kwargs.pop("metric_names", CONTRASTIVE_METRICS))
        if loss == "sigmoid":
            metric_names += ("logit_bias",)
        super().__init__(metric_names=metric_names, **kwargs)
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.dtype_policy = backbone.dtype_policy
        self.contrastive = ContrastiveLoss(
            negatives=negatives,
            local_batch_size=local_batch_size,
            local_steps=local_steps,
            init_logit_scale=init_logit_scale,
            max_logit_scale=max_logit_scale,
            loss=loss,
            init_logit_bias=init_logit_bias,
            name="contrastive",
        )
        self.contrastive.build()
        _check_patch_dropout(patch_dropout)
        self.patch_dropout = float(patch_dropout)
        self.seed = seed
        # Only a model that drops patches holds a seed state (plain CLIP's
        # weights stay as they were).
        self.seed_generator = keras.random.SeedGenerator(seed) if patch_dropout else None
        self.unmasked_tuning = False
        self.built = True
        if compile:
            self.compile()

    def set_patch_dropout(self, rate):
        """Change the patch-dropout share and retrace the train step.

        FLIP's unmasked tuning: `set_patch_dropout(0.0)` after the masked
        phase, then `fit` again. A model built without patch dropout has no
        seed state, so it can only be set to `0.0`.
        """
        _check_patch_dropout(rate)
        if rate and self.seed_generator is None:
            raise ValueError(
                f"set_patch_dropout({rate}): this model was built with "
                "patch_dropout=0, so it holds no seed state; build it with "
                "patch_dropout > 0 to train with dropped patches."
            )
        self.patch_dropout = float(rate)
        if getattr(self, "optimizer", None) is not None:
            self.make_train_function(force=True)

    def set_unmasked_tuning(self, enabled=True):
        """Train on whole inputs from now on (FLIP's unmasked tuning).

        While enabled, a training step sees every patch and (for `MAECLIP`)
        the whole caption: CLIP drops no patches whatever its
        `patch_dropout`, and `MAECLIP` computes the contrastive loss alone on
        the full views (nothing is masked, so nothing is reconstructed; its
        reconstruction metrics are not updated). `enabled=False` returns to
        the masked training step. Evaluation and inference always see whole
        inputs. Not saved with the model: a training-phase switch.
        """
        self.unmasked_tuning = bool(enabled)
        if getattr(self, "optimizer", None) is not None:
            self.make_train_function(force=True)

    def call(self, inputs, training=False):
        encoder = self.backbone.image_encoder
        check_images(inputs["images"], encoder.image_size, encoder.num_channels)
        vocabulary_size = getattr(self.backbone.text_encoder, "vocabulary_size", None)
        if vocabulary_size is not None:
            check_token_ids(inputs["token_ids"], vocabulary_size)
        if training and self.patch_dropout and not self.unmasked_tuning:
            return self._call_with_patch_dropout(inputs)
        return self.backbone(
            {
                "images": inputs["images"],
                "token_ids": inputs["token_ids"],
                "padding_mask": inputs["padding_mask"],
            },
            training=training,
        )

    def _call_with_patch_dropout(self, inputs):
        """FLIP: the image tower encodes a random `1 - patch_dropout` of the patches."""
        backbone = self.backbone
        encoder = backbone.image_encoder
        patches = encoder.embed_patches(inputs["images"])
        kept = random_masking(patches, self.patch_dropout, self.seed_generator)["kept"]
        image_tokens = encoder.encode_tokens(kept, training=True)
        text_tokens = backbone.text_encoder(
            {"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]},
            training=True,
        )
        return {
            "image_embeddings": backbone.embed_image_tokens(image_tokens),
            "text_embeddings": backbone.embed_text_tokens(text_tokens, inputs["padding_mask"]),
        }

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return self.total_loss(self.contrastive_term(y_pred, training))

    def contrastive_term(self, y_pred, training):
        """InfoNCE of `y_pred`'s embeddings; tracks its metrics."""
        out = self.contrastive(
            y_pred["image_embeddings"], y_pred["text_embeddings"], training=training
        )
        batch_size = ops.shape(y_pred["image_embeddings"])[0]
        for name in CONTRASTIVE_METRICS[1:] + (("logit_bias",) if "logit_bias" in out else ()):
            self.track(name, out[name], batch_size)
        self.track("contrastive_loss", out["loss"], batch_size)
        return out["loss"]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "negatives": self.contrastive.negatives,
                "local_batch_size": self.contrastive.local_batch_size,
                "local_steps": self.contrastive.local_steps,
                "init_logit_scale": self.contrastive.init_logit_scale,
                "max_logit_scale": self.contrastive.max_logit_scale,
                "loss": self.contrastive.loss,
                "init_logit_bias": self.contrastive.init_logit_bias,
                "patch_dropout": self.patch_dropout,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def build_parts(cls, preset, **overrides):
        return {"backbone": cls.backbone_cls.from_preset(preset, **overrides)}


def _check_patch_dropout(rate):
    if not 0.0 <= float(rate) < 1.0:
        raise ValueError(
            f"patch_dropout={rate}: use a share of patches dropped in [0, 1) "
            "(FLIP uses 0.5 or 0.75; 0 keeps every patch)."
        )
