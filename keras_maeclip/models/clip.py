"""CLIP: contrastive image–text pretraining, trained with `model.fit`."""

import math

import keras
from keras import ops

from keras_maeclip.losses import ContrastiveLoss
from keras_maeclip.models._validation import check_images
from keras_maeclip.models.clip_backbone import ImageTextBackbone
from keras_maeclip.models.preprocessor import ImageTextPreprocessor
from keras_maeclip.models.pretraining_task import PretrainingTask
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

    A `ImageTextBackbone` (two towers, pooling, bias-free projections) plus the
    symmetric InfoNCE loss with a learned temperature. `fit` trains it
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
        init_logit_scale: float, initial log-temperature scale, `ln(1/0.07)`.
        max_logit_scale: float, clamp of the log-scale, `ln(100)`.
        compile: bool. Compile with the defaults of `compile()`.
        **kwargs: `keras_hub.models.Task` arguments (`name`, ...).

    Example:
    >>> model = CLIP.from_preset("clip_tiny_gap", vocabulary_size=64)
    >>> batch = {"images": np.zeros((4, 32, 32, 3), "float32"),
    ...          "token_ids": np.ones((4, 16), "int32"),
    ...          "padding_mask": np.ones((4, 16), "int32")}
    >>> history = model.fit(batch, epochs=1, verbose=0)

    References: Radford et al. 2021 (CLIP); Weers et al. 2023 §3.
    """

    presets = named_presets("CLIP_PRESETS")

    backbone_cls = ImageTextBackbone
    preprocessor_cls = ImageTextPreprocessor
    # Task arguments that `from_preset` separates from architecture overrides.
    task_keys = PretrainingTask.task_keys + (
        "negatives", "local_batch_size", "local_steps", "init_logit_scale", "max_logit_scale",
    )
    text_overrides = "text_encoder"

    def __init__(
        self,
        backbone,
        preprocessor=None,
        negatives="global",
        local_batch_size=None,
        local_steps=None,
        init_logit_scale=math.log(1 / 0.07),
        max_logit_scale=math.log(100.0),
        compile=True,
        **kwargs,
    ):
        kwargs.setdefault("metric_names", CONTRASTIVE_METRICS)
        super().__init__(**kwargs)
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.dtype_policy = backbone.dtype_policy
        self.contrastive = ContrastiveLoss(
            negatives=negatives,
            local_batch_size=local_batch_size,
            local_steps=local_steps,
            init_logit_scale=init_logit_scale,
            max_logit_scale=max_logit_scale,
            name="contrastive",
        )
        self.contrastive.build()
        self.built = True
        if compile:
            self.compile()

    def call(self, inputs, training=False):
        encoder = self.backbone.image_encoder
        check_images(inputs["images"], encoder.image_size, encoder.num_channels)
        return self.backbone(
            {
                "images": inputs["images"],
                "token_ids": inputs["token_ids"],
                "padding_mask": inputs["padding_mask"],
            },
            training=training,
        )

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return self.total_loss(self.contrastive_term(y_pred, training))

    def contrastive_term(self, y_pred, training):
        """InfoNCE of `y_pred`'s embeddings; tracks its metrics."""
        out = self.contrastive(
            y_pred["image_embeddings"], y_pred["text_embeddings"], training=training
        )
        batch_size = ops.shape(y_pred["image_embeddings"])[0]
        for name in CONTRASTIVE_METRICS[1:]:
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
            }
        )
        return config

    @classmethod
    def build_parts(cls, preset, **overrides):
        return {"backbone": cls.backbone_cls.from_preset(preset, **overrides)}
