"""MAE: masked autoencoding of images, trained with `model.fit`."""

import keras
from keras import ops

from keras_maeclip.layers import random_masking
from keras_maeclip.losses import pixel_reconstruction_loss
from keras_maeclip.models._validation import check_images
from keras_maeclip.models.cross_modal_decoder import CrossModalDecoder
from keras_maeclip.models.presets import build_mae_parts
from keras_maeclip.models.pretraining_task import PretrainingTask
from keras_maeclip.models.vit_encoder import ViTEncoder
from keras_maeclip.models._preset_listing import named_presets


@keras.saving.register_keras_serializable(package="keras_maeclip")
class MAE(PretrainingTask):
    """Masked autoencoder: encode the kept patches, reconstruct the masked ones.

    Per image, `mask_ratio` of the patches are dropped by `random_masking`
    (after the position encoding, so kept patches keep their positions); the
    `ViTEncoder` encodes only the kept ones; an image-only
    `CrossModalDecoder` fills mask tokens back in and predicts every
    patch's pixels; the loss is the per-patch-normalised pixel MSE on masked
    patches (`norm_pix_loss`). `fit` takes preprocessed `{"images"}` batches
    (set a preprocessor that outputs `images` or map one in `tf.data`).
    Calling the model returns `{"pixels": (batch, patches, p²·C) predictions
    (normalised per patch when `norm_pix_loss`), "image_mask": 1 = masked}`.

    Args:
        backbone: a `ViTEncoder`.
        decoder: an image-only `CrossModalDecoder` for the same patch grid.
        mask_ratio: float, defaults to `0.75`.
        norm_pix_loss: bool, defaults to `True`.
        seed: int or `None`, seeds the masking noise.
        preprocessor: optional preprocessor.
        compile: bool. Compile with the defaults of `compile()`.
        **kwargs: `keras_hub.models.Task` arguments.

    Example:
    >>> model = MAE.from_preset("mae_tiny")
    >>> history = model.fit({"images": np.zeros((4, 32, 32, 3), "float32")},
    ...                     epochs=1, verbose=0)

    References: He et al. 2022 (MAE); Weers et al. 2023 §3.
    """

    presets = named_presets("MAE_PRESETS")

    backbone_cls = ViTEncoder
    task_keys = PretrainingTask.task_keys + ("mask_ratio", "norm_pix_loss", "seed")

    def __init__(
        self,
        backbone,
        decoder,
        mask_ratio=0.75,
        norm_pix_loss=True,
        seed=None,
        preprocessor=None,
        compile=True,
        **kwargs,
    ):
        super().__init__(metric_names=("image_reconstruction_loss",), **kwargs)
        if decoder.num_patches != backbone.num_patches or decoder.patch_size != backbone.patch_size:
            raise ValueError(
                f"The decoder's grid ({decoder.num_patches} patches of "
                f"{decoder.patch_size}px) must match the encoder's "
                f"({backbone.num_patches} of {backbone.patch_size}px)."
            )
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.decoder = decoder
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.dtype_policy = backbone.dtype_policy
        if not self.decoder.built:
            self.decoder.build((None, None, backbone.hidden_dim))
        self.built = True
        if compile:
            self.compile()

    def call(self, inputs, training=False):
        images = inputs["images"] if isinstance(inputs, dict) else inputs
        encoder = self.backbone
        check_images(images, encoder.image_size, encoder.num_channels)
        masked = random_masking(encoder.embed_patches(images), self.mask_ratio, self.seed_generator)
        tokens = encoder.encode_tokens(masked["kept"], training=training)
        if encoder.use_class_token:
            tokens = tokens[:, 1:]
        pixels = self.decoder(tokens, masked["ids_restore"])["pixels"]
        return {"pixels": pixels, "image_mask": masked["mask"]}

    @property
    def patch_size(self):
        """Side of an image patch, in pixels."""
        return self.backbone.patch_size

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        images = x["images"] if isinstance(x, dict) else x
        loss = pixel_reconstruction_loss(
            images, y_pred["pixels"], y_pred["image_mask"], self.patch_size, self.norm_pix_loss
        )
        self.track("image_reconstruction_loss", loss, ops.shape(y_pred["pixels"])[0])
        return self.total_loss(loss)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "mask_ratio": self.mask_ratio,
                "norm_pix_loss": self.norm_pix_loss,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def build_parts(cls, preset, **overrides):
        encoder, decoder = build_mae_parts(preset, **overrides)
        return {"backbone": encoder, "decoder": decoder}
