"""MAE-CLIP: CLIP plus masked image and text reconstruction, trained with `fit`."""

import keras
from keras import ops

from keras_maeclip.layers import (
    SIMILARITY_DIRECTIONS,
    random_masking,
    similarity_masking,
    text_masking,
)
from keras_maeclip.losses import pixel_reconstruction_loss, token_reconstruction_loss
from keras_maeclip.models._validation import (
    check_image_mask_ratio,
    check_images,
    check_part,
    check_ratio,
    check_token_ids,
)
from keras_maeclip.models.clip import CLIP, CONTRASTIVE_METRICS
from keras_maeclip.models.cross_modal_decoder import CrossModalDecoder
from keras_maeclip.models.preprocessor import resolve_text_mask_ids
from keras_maeclip.models.presets import build_maeclip_parts
from keras_maeclip.models._preset_listing import named_presets

CONTRASTIVE_VIEWS = ("masked", "full")
MASKING_STRATEGIES = ("random", "similarity")
_RECONSTRUCTION_METRICS = ("image_reconstruction_loss", "text_reconstruction_loss")


@keras.saving.register_keras_serializable(package="keras_maeclip")
class MAECLIP(CLIP):
    """CLIP's two towers and contrastive loss plus a cross-modal decoder.

    One training step (Weers et al. 2023 §3):

    1. The caption's tokens are masked BERT-style (`text_mask_ratio` of the
       real, non-special tokens become `[MASK]`) and the text tower encodes
       the masked caption; its tokens feed the decoder. With
       `contrastive_text_view="masked"` (one pass) its pooled embedding is
       also the contrastive one; with `"full"` a second, cheap text-tower
       pass over the whole caption gives the contrastive embedding (what
       CLIP's text tower sees).
    2. The image's patches are embedded (with positions), `image_mask_ratio`
       of them are dropped and the image tower encodes only the kept ones.
       With `contrastive_view="masked"` (default, one pass) the contrastive
       image embedding pools those kept tokens; with `"full"` a second pass
       over all patches gives it.
    3. The `CrossModalDecoder` fills in mask tokens and reconstructs the
       masked patches (per-patch normalised pixels) and the masked tokens.

    Outside training (`training=False`: `evaluate`, `predict`, every
    evaluation, held-out losses) the contrastive embeddings always come
    from the whole image and the whole caption, whatever the views, so
    MAE-CLIP's held-out contrastive loss and embeddings compare with
    CLIP's; the reconstruction outputs and losses stay on masked inputs
    (the masked patches and tokens are what they measure).
    `set_unmasked_tuning(True)` (FLIP's unmasked tuning) makes the
    training step do the same and train the contrastive loss alone.

    Loss: `contrastive + image_loss_weight · image + text_loss_weight · text`
    (defaults `0.05` and `0.1`, the paper's). Each term is its own metric
    (`contrastive_loss`, `image_reconstruction_loss`,
    `text_reconstruction_loss`) next to CLIP's.

    `masking="similarity"` chooses the patches by the cosine similarity
    between each patch and the caption (the library's reading of the
    paper's Appendix F; see `keras_maeclip.layers.similarity_masking`).
    A patch's embedding for this score is `backbone.embed_patch_tokens` of
    the image tower's tokens of the unmasked image (each patch token
    through the image pooling head alone, then the image projection: the
    same dense embedding that grounding and segmentation use), under
    stop-gradient. With `contrastive_view="full"` that tower pass is the
    contrastive one; with `"masked"` it is an extra forward-only pass, which
    costs compute. `similarity_direction` says which patches the draw
    picks, and with it what each view learns from:

    - `"mask_similar"` (default): the most caption-similar patches are
      masked and reconstructed. With `contrastive_view="masked"` the
      contrastive embedding pools only the *least* similar (kept) patches,
      so the caption must be matched from the image's background; with
      `"full"` the contrastive embedding sees every patch and only the
      reconstruction is steered.
    - `"keep_similar"`: the most caption-similar patches are kept and
      encoded, the least similar ones masked and reconstructed from them.
      With `"masked"` the contrastive embedding pools the caption-relevant
      patches (a saliency-cropped FLIP); with `"full"` it sees every patch
      and the decoder fills in the background.

    Calling the model returns `image_embeddings`, `text_embeddings`,
    `pixels`, `image_mask` (1 = masked), `text_mask` and `text_targets`
    `(batch, length)`, and the token head's output at the masked positions
    only (the vocabulary-wide head is the decoder's largest matmul):
    `masked_token_logits` `(batch, slots, vocabulary_size)` with
    `masked_token_positions`, `masked_token_targets` and
    `masked_token_weights` `(batch, slots)` (1 on slots holding a masked
    token), `slots = num_text_slots(length, text_mask_ratio)`.

    Args:
        backbone: an `ImageTextBackbone`.
        decoder: a `CrossModalDecoder` with a text head for the backbone's
            patch grid, vocabulary and sequence length.
        preprocessor: an `ImageTextPreprocessor` or `None`.
        image_mask_ratio: float, defaults to `0.75`.
        text_mask_ratio: float, defaults to `0.15` (the text tower also feeds
            the contrastive loss; M3AE uses 0.75).
        image_loss_weight: float, defaults to `0.05`.
        text_loss_weight: float, defaults to `0.1`.
        contrastive_view: `"masked"` or `"full"`, the image view of the
            contrastive loss in training; defaults to `"masked"`.
        contrastive_text_view: `"masked"` or `"full"`, the caption view of
            the contrastive loss in training (the masked caption, or the
            whole one through a second text-tower pass); defaults to
            `"masked"`.
        masking: `"random"` or `"similarity"`, defaults to `"random"`.
        similarity_temperature: float, how peaked similarity masking is.
            Defaults to `0.1`.
        similarity_direction: `"mask_similar"` or `"keep_similar"`, which
            patches similarity masking draws (see above). Defaults to
            `"mask_similar"`; ignored by random masking.
        norm_pix_loss: bool, defaults to `True`.
        mask_token_id, special_token_ids: ids for text masking; `None` takes
            them from the preprocessor's tokenizer, else `learn_vocabulary`'s
            layout.
        seed: int or `None`, seeds the masking.
        negatives, local_batch_size, local_steps, init_logit_scale,
        max_logit_scale, loss, init_logit_bias: the contrastive loss, as
            for `CLIP`; `loss="sigmoid"` makes it MAE-SigLIP.
        compile: bool. Compile with the defaults of `compile()`.
        **kwargs: `keras_hub.models.Task` arguments.

    Example:
    >>> model = MAECLIP.from_preset("maeclip_tiny_max", vocabulary_size=64)
    >>> batch = {"images": np.zeros((4, 32, 32, 3), "float32"),
    ...          "token_ids": np.ones((4, 16), "int32"),
    ...          "padding_mask": np.ones((4, 16), "int32")}
    >>> history = model.fit(batch, epochs=1, verbose=0)

    References: Weers et al. 2023 (MAE-CLIP); He et al. 2022 (MAE); Geng et
    al. 2022 (M3AE); Li et al. 2023 (FLIP, the one-pass masked view).
    """

    presets = named_presets("MAECLIP_PRESETS")

    task_keys = CLIP.task_keys + (
        "image_mask_ratio", "text_mask_ratio", "image_loss_weight", "text_loss_weight",
        "contrastive_view", "contrastive_text_view", "masking", "similarity_temperature", "similarity_direction",
        "norm_pix_loss",
        "mask_token_id", "special_token_ids", "seed",
    )
    # compile(): CLIP's AdamW and exclusions (inherited). The contrastive
    # loss carries weight 1 against 0.05 / 0.1 for reconstruction and the
    # towers are CLIP's, so the optimiser follows the dominant term's
    # reference: β2 = 0.98 (MAE's and M3AE's 0.95 is one flag away:
    # `compile(beta_2=0.95)`). The decoder's mask tokens, type and position
    # embeddings are not decayed (as MAE, M3AE).

    def __init__(
        self,
        backbone,
        decoder,
        preprocessor=None,
        image_mask_ratio=0.75,
        text_mask_ratio=0.15,
        image_loss_weight=0.05,
        text_loss_weight=0.1,
        contrastive_view="masked",
        contrastive_text_view="masked",
        masking="random",
        similarity_temperature=0.1,
        similarity_direction="mask_similar",
        norm_pix_loss=True,
        mask_token_id=None,
        special_token_ids=None,
        seed=None,
        compile=True,
        **kwargs,
    ):
        if contrastive_view not in CONTRASTIVE_VIEWS:
            raise ValueError(
                f"Unknown contrastive_view={contrastive_view!r}; use one of {CONTRASTIVE_VIEWS}."
            )
        if contrastive_text_view not in CONTRASTIVE_VIEWS:
            raise ValueError(
                f"Unknown contrastive_text_view={contrastive_text_view!r}; use one of "
                f"{CONTRASTIVE_VIEWS}."
            )
        if masking not in MASKING_STRATEGIES:
            raise ValueError(f"Unknown masking={masking!r}; use one of {MASKING_STRATEGIES}.")
        if similarity_direction not in SIMILARITY_DIRECTIONS:
            raise ValueError(
                f"Unknown similarity_direction={similarity_direction!r}; use one of "
                f"{SIMILARITY_DIRECTIONS}."
            )
        check_image_mask_ratio("image_mask_ratio", image_mask_ratio, image_loss_weight)
        check_ratio("text_mask_ratio", text_mask_ratio, "e.g. 0.15 (MAE-CLIP's).", include_high=True)
        check_part("MAECLIP", "decoder", decoder, CrossModalDecoder)
        _check_decoder(decoder, backbone)
        if kwargs.get("patch_dropout"):
            raise ValueError(
                "MAECLIP masks images with image_mask_ratio (its encoders already "
                "see only the kept patches); patch_dropout is CLIP's. Pass "
                f"image_mask_ratio instead of patch_dropout={kwargs['patch_dropout']}."
            )
        metric_names = CONTRASTIVE_METRICS[:1] + _RECONSTRUCTION_METRICS + CONTRASTIVE_METRICS[1:]
        super().__init__(
            backbone, preprocessor=preprocessor, compile=False, metric_names=metric_names, **kwargs
        )
        self.decoder = decoder
        self.image_mask_ratio = image_mask_ratio
        self.text_mask_ratio = text_mask_ratio
        self.image_loss_weight = image_loss_weight
        self.text_loss_weight = text_loss_weight
        self.contrastive_view = contrastive_view
        self.contrastive_text_view = contrastive_text_view
        self.masking = masking
        self.similarity_temperature = similarity_temperature
        self.similarity_direction = similarity_direction
        self.norm_pix_loss = norm_pix_loss
        self.mask_token_id, self.special_token_ids = resolve_text_mask_ids(
            preprocessor, backbone.text_encoder.vocabulary_size, mask_token_id, special_token_ids
        )
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        if not decoder.built:
            decoder.build(
                (None, None, backbone.image_encoder.hidden_dim),
                text_tokens_shape=(None, None, backbone.text_encoder.hidden_dim),
            )
        if compile:
            self.compile()

    @property
    def patch_size(self):
        """Side of an image patch, in pixels."""
        return self.backbone.image_encoder.patch_size

    def call(self, inputs, training=False):
        backbone = self.backbone
        image_encoder, text_encoder = backbone.image_encoder, backbone.text_encoder
        images, padding_mask = inputs["images"], inputs["padding_mask"]
        check_images(images, image_encoder.image_size, image_encoder.num_channels)
        check_token_ids(inputs["token_ids"], text_encoder.vocabulary_size)
        if training and self.unmasked_tuning:
            # FLIP's unmasked tuning: whole images, whole captions, contrastive only.
            text_tokens = self._encode_caption(inputs["token_ids"], padding_mask, training)
            image_tokens = image_encoder.encode_tokens(
                image_encoder.embed_patches(images), training=training
            )
            return {
                "image_embeddings": backbone.embed_image_tokens(image_tokens),
                "text_embeddings": backbone.embed_text_tokens(text_tokens, padding_mask),
            }
        # Outside training the contrastive embeddings always see the whole
        # image and caption (as CLIP's do); reconstruction stays masked.
        whole_image = not training or self.contrastive_view == "full"
        whole_caption = not training or self.contrastive_text_view == "full"

        text = text_masking(
            inputs["token_ids"], padding_mask, self.text_mask_ratio, self.mask_token_id,
            self.special_token_ids, seed=self.seed_generator,
        )
        text_tokens = self._encode_caption(text["token_ids"], padding_mask, training)
        contrastive_text_tokens = text_tokens
        if whole_caption:
            contrastive_text_tokens = self._encode_caption(inputs["token_ids"], padding_mask, training)
        text_embeddings = backbone.embed_text_tokens(contrastive_text_tokens, padding_mask)

        patches = image_encoder.embed_patches(images)
        full_tokens = None
        if whole_image:
            full_tokens = image_encoder.encode_tokens(patches, training=training)
        if self.masking == "similarity":
            if full_tokens is None:
                scoring_tokens = image_encoder.encode_tokens(patches, training=False)
            else:
                scoring_tokens = full_tokens
            masked = similarity_masking(
                patches,
                backbone.embed_patch_tokens(scoring_tokens),
                text_embeddings,
                self.image_mask_ratio,
                temperature=self.similarity_temperature,
                seed=self.seed_generator,
                direction=self.similarity_direction,
            )
        else:
            masked = random_masking(patches, self.image_mask_ratio, self.seed_generator)
        kept_tokens = image_encoder.encode_tokens(masked["kept"], training=training)
        image_embeddings = backbone.embed_image_tokens(
            kept_tokens if full_tokens is None else full_tokens
        )

        decoded = self.decoder(
            self._patch_tokens(kept_tokens),
            masked["ids_restore"],
            text_tokens=text_tokens,
            text_mask=text["mask"],
            padding_mask=padding_mask,
            text_positions=text["positions"],
        )
        return {
            "image_embeddings": image_embeddings,
            "text_embeddings": text_embeddings,
            "pixels": decoded["pixels"],
            "image_mask": masked["mask"],
            "masked_token_logits": decoded["token_logits"],
            "masked_token_positions": text["positions"],
            "masked_token_targets": text["slot_targets"],
            "masked_token_weights": text["slot_weights"],
            "text_mask": text["mask"],
            "text_targets": text["targets"],
        }

    def _encode_caption(self, token_ids, padding_mask, training):
        """The text tower's tokens for `token_ids` (masked or whole)."""
        text_encoder = self.backbone.text_encoder
        return text_encoder.encode_tokens(
            text_encoder.embed_tokens(token_ids), padding_mask, training=training
        )

    def _patch_tokens(self, tokens):
        """Drop the class token, if the image tower has one."""
        return tokens[:, 1:] if self.backbone.image_encoder.use_class_token else tokens

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        contrastive = self.contrastive_term(y_pred, training)
        if "pixels" not in y_pred:
            # Unmasked tuning: nothing is masked, nothing to rebuild. The
            # decoder gets zero gradients (a zero-weighted tie) rather than
            # none, so every backend updates the same variables without
            # "gradients do not exist" warnings.
            tie = sum(ops.sum(ops.cast(v, "float32")) for v in self.decoder.trainable_variables)
            return self.total_loss(contrastive + 0.0 * tie)
        image = pixel_reconstruction_loss(
            x["images"], y_pred["pixels"], y_pred["image_mask"], self.patch_size, self.norm_pix_loss
        )
        text = token_reconstruction_loss(
            y_pred["masked_token_targets"], y_pred["masked_token_logits"],
            y_pred["masked_token_weights"],
        )
        batch_size = ops.shape(y_pred["pixels"])[0]
        self.track("image_reconstruction_loss", image, batch_size)
        self.track("text_reconstruction_loss", text, batch_size)
        total = contrastive + self.image_loss_weight * image + self.text_loss_weight * text
        return self.total_loss(total)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_mask_ratio": self.image_mask_ratio,
                "text_mask_ratio": self.text_mask_ratio,
                "image_loss_weight": self.image_loss_weight,
                "text_loss_weight": self.text_loss_weight,
                "contrastive_view": self.contrastive_view,
                "contrastive_text_view": self.contrastive_text_view,
                "masking": self.masking,
                "similarity_temperature": self.similarity_temperature,
                "similarity_direction": self.similarity_direction,
                "norm_pix_loss": self.norm_pix_loss,
                "mask_token_id": self.mask_token_id,
                "special_token_ids": list(self.special_token_ids),
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def build_parts(cls, preset, **overrides):
        backbone, decoder = build_maeclip_parts(preset, **overrides)
        return {"backbone": backbone, "decoder": decoder}


def _check_decoder(decoder, backbone):
    image, text = backbone.image_encoder, backbone.text_encoder
    expected = dict(num_patches=image.num_patches, patch_size=image.patch_size,
                    vocabulary_size=text.vocabulary_size, sequence_length=text.sequence_length)
    wrong = {k: getattr(decoder, k) for k, v in expected.items() if getattr(decoder, k) != v}
    if wrong:
        raise ValueError(
            f"The decoder does not match the backbone: decoder has {wrong}, the "
            f"towers need {expected}. Build both with MAECLIP.from_preset or size the "
            "decoder from the towers."
        )
