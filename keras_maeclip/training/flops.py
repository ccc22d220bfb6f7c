"""Analytic FLOP count of one training step of the library's models, per sample.

The count covers the matrix multiplications of the model: dense layers
(`2 · tokens · d_in · d_out`), attention scores and the attention-weighted
sum (`2 · 2 · tokens² · width` per block), the MAP pooling head and the
contrastive logits. It ignores norms, activations, softmax, additions,
embedding lookups (gathers), the losses' elementwise work and the
optimizer update, which together are a few percent of a transformer's
work at realistic widths (more at toy widths). A multiply–add counts as 2
FLOPs.

Training FLOPs follow the usual convention: the backward pass of a matmul
costs twice its forward (one product for the input's gradient, one for the
weight's), so a differentiated forward counts 3 times. Work that runs under
stop-gradient (MAE-CLIP's similarity scoring pass) counts once.

Sequence lengths are the padded ones: attention runs over padding (it is
only masked out), so a caption costs its padded `sequence_length` whatever
its number of real tokens.
"""

import collections

__all__ = ["FlopCount", "analytic_flops_per_sample", "flop_count", "supports"]


class FlopCount(collections.namedtuple("FlopCount", ["grad", "no_grad"])):
    """Forward FLOPs per sample, by part, split by whether they are differentiated.

    Attributes:
        grad: dict, part name → forward FLOPs of work that is differentiated
            (its backward pass costs 2× its forward).
        no_grad: dict, part name → forward FLOPs of work under stop-gradient
            (forward only).
    """

    @property
    def forward(self):
        """Forward FLOPs per sample: all parts, differentiated or not."""
        return sum(self.grad.values()) + sum(self.no_grad.values())

    @property
    def train(self):
        """Training FLOPs per sample: `3 · grad + 1 · no_grad`."""
        return 3 * sum(self.grad.values()) + sum(self.no_grad.values())


def dense_flops(tokens, d_in, d_out):
    """FLOPs of `(tokens, d_in) @ (d_in, d_out)`: `2 · tokens · d_in · d_out`."""
    return 2 * tokens * d_in * d_out


def _tower_flops(tokens, width, layers, mlp_ratio):
    """Forward FLOPs of `layers` pre-norm transformer blocks on `tokens` tokens.

    Per block: q, k, v and output projections (`4 · width²` per token), the
    two MLP matrices (`2 · width · mlp` per token), and attention: `q · kᵀ`
    and `p · v` are each `tokens² · width` multiply–adds summed over heads.
    """
    mlp = int(round(width * mlp_ratio))
    dense = 2 * tokens * (4 * width * width + 2 * width * mlp)  # qkv+out, mlp
    attention = 2 * 2 * tokens * tokens * width  # q·k and p·v
    return layers * (dense + attention)


def _pooling_flops(pooler, tokens, width):
    """Forward FLOPs of a `TokenPooling` over `tokens` tokens (MAP only; else 0).

    MAP: a one-token query attends over the tokens (query and output
    projections on 1 token, key and value projections on all of them, the
    scores and weighted sum), then a residual MLP on the one pooled token.
    """
    if pooler.pooling != "map":
        return 0
    hidden = int(round(width * pooler.mlp_ratio))
    projections = dense_flops(1, width, width) * 2 + dense_flops(tokens, width, width) * 2
    attention = 2 * 2 * tokens * width
    mlp = dense_flops(1, width, hidden) + dense_flops(1, hidden, width)
    return projections + attention + mlp


def _patch_embedding_flops(num_patches, patch_size, num_channels, width):
    return dense_flops(num_patches, patch_size * patch_size * num_channels, width)


def _logit_columns(contrastive, batch_size):
    """Columns of one sample's logits row: the captions it is compared with.

    Global negatives: the global batch. Local negatives: a block of
    `local_batch_size` (`None`: a replica's own batch, counted here as the
    whole batch, exact on one device). With `local_steps` both losses are
    computed every step (`where` picks one), so both rows count.
    """
    local = min(int(contrastive.local_batch_size or batch_size), batch_size)
    if contrastive.local_steps is not None:
        return batch_size + local
    if contrastive.negatives == "local":
        return local
    return batch_size


def _check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"batch_size must be a positive int (the global batch: each sample's "
            f"contrastive logits row has that many columns); got {batch_size!r}."
        )


def supports(model):
    """Whether `flop_count` knows `model`'s architecture (CLIP, MAE-CLIP, M3AE, MAE)."""
    from keras_maeclip.models import CLIP, M3AE, MAE

    return isinstance(model, (CLIP, M3AE, MAE))


def flop_count(model, batch_size=None, sequence_length=None):
    """Forward FLOPs per sample of one training step, by part.

    Reads the architecture from the model (tower sizes, pooling, masking
    ratios, MAE-CLIP's `contrastive_view` and `masking`) and counts what its
    training forward runs:

    - `CLIP`: patch embedding, image tower over all patches (+ class token),
      text tower, pooling heads (MAP only), projections, and the sample's
      row of the `batch_size`-column logits (local negatives: the block's
      columns; with `local_steps`, both losses are computed).
    - `MAECLIP`: the text tower on the masked caption; the image tower over
      the kept patches; with `contrastive_view="full"` a second,
      differentiated pass over all patches; with `masking="similarity"` and
      the masked view an extra forward-only pass over all patches, plus (in
      both views) the forward-only projection of every patch token and its
      similarity to the caption; then the cross-modal decoder (input
      projections, blocks over all patches + text tokens, the pixel head,
      and the vocabulary head at the masked-token slots only,
      `num_text_slots(length, text_mask_ratio)`) and the logits.
    - `M3AE`: patch embedding, one shared tower over the kept patches and
      the text tokens, the decoder as above.
    - `MAE`: patch embedding, the encoder over the kept patches
      (+ class token), an image-only decoder over all patches.

    Args:
        model: a `CLIP`, `MAECLIP`, `M3AE` or `MAE`.
        batch_size: int, the global batch size. Needed for the contrastive
            models (each sample's logits row has a column per caption);
            ignored by `M3AE` and `MAE`.
        sequence_length: int or `None`, the padded caption length of the
            batches. `None`: the text tower's `sequence_length` (what a
            preprocessor built with the model pads to).

    Returns:
        A `FlopCount`: `.grad` / `.no_grad` dicts of parts, `.forward` and
        `.train` totals per sample.

    Example:
    >>> model = CLIP.from_preset("clip_tiny_gap", vocabulary_size=64, compile=False)
    >>> count = flop_count(model, batch_size=32)
    >>> count.train == 3 * count.forward
    True
    """
    from keras_maeclip.models import CLIP, M3AE, MAE, MAECLIP

    grad, no_grad = {}, {}
    if isinstance(model, MAE):
        encoder, decoder = model.backbone, model.decoder
        kept = _num_kept(encoder.num_patches, model.mask_ratio)
        grad["patch_embedding"] = _patch_embedding_flops(
            encoder.num_patches, encoder.patch_size, encoder.num_channels, encoder.hidden_dim
        )
        grad["image_tower"] = _tower_flops(
            kept + int(encoder.use_class_token), encoder.hidden_dim, encoder.num_layers,
            encoder.mlp_ratio,
        )
        grad.update(_decoder_parts(decoder, kept, encoder.hidden_dim, None, None))
        return FlopCount(grad, no_grad)
    if isinstance(model, M3AE):
        backbone, decoder = model.backbone, model.decoder
        length = backbone.sequence_length if sequence_length is None else int(sequence_length)
        kept = _num_kept(backbone.num_patches, model.image_mask_ratio)
        grad["patch_embedding"] = _patch_embedding_flops(
            backbone.num_patches, backbone.patch_size, backbone.num_channels, backbone.hidden_dim
        )
        grad["shared_tower"] = _tower_flops(
            kept + length, backbone.hidden_dim, backbone.num_layers, backbone.mlp_ratio
        )
        grad.update(_decoder_parts(decoder, kept, backbone.hidden_dim, length, backbone.hidden_dim,
                                   model.text_mask_ratio))
        return FlopCount(grad, no_grad)
    if not isinstance(model, CLIP):
        raise ValueError(
            f"flop_count knows CLIP, MAECLIP, M3AE and MAE; got {type(model).__name__}. "
            "Pass your own count (e.g. Throughput(flops_per_sample=...))."
        )

    _check_batch_size(batch_size)
    backbone = model.backbone
    image, text = backbone.image_encoder, backbone.text_encoder
    length = text.sequence_length if sequence_length is None else int(sequence_length)
    embed = backbone.embedding_dim
    cls = int(image.use_class_token)
    # Tokens the image pooler sees: the class token alone ("first" pooling:
    # no work) or the patch tokens (class token stripped).
    strip = image.use_class_token and backbone.image_pooling != "first"

    def pooled(tokens):
        return tokens - 1 if strip else tokens

    grad["patch_embedding"] = _patch_embedding_flops(
        image.num_patches, image.patch_size, image.num_channels, image.hidden_dim
    )
    grad["text_tower"] = _tower_flops(length, text.hidden_dim, text.num_layers, text.mlp_ratio)
    grad["text_pooling"] = _pooling_flops(backbone.text_pooler, length, text.hidden_dim)
    grad["text_projection"] = dense_flops(1, text.hidden_dim, embed)
    full_tokens = image.num_patches + cls

    def full_pass():
        return _tower_flops(full_tokens, image.hidden_dim, image.num_layers, image.mlp_ratio)

    if isinstance(model, MAECLIP):
        kept = _num_kept(image.num_patches, model.image_mask_ratio)
        contrastive_tokens = kept + cls
        if model.contrastive_view == "full":
            grad["image_tower_full"] = full_pass()
            contrastive_tokens = full_tokens
        if model.contrastive_text_view == "full":
            # The whole caption through the text tower a second time.
            grad["text_tower_whole_caption"] = grad["text_tower"]
        if model.masking == "similarity":
            if model.contrastive_view == "masked":
                no_grad["image_tower_scoring"] = full_pass()
            # embed_patch_tokens: each patch alone through the pooling head
            # (MAP: one-token attention + MLP per patch; else no work).
            no_grad["scoring_pooling"] = image.num_patches * _pooling_flops(
                backbone.image_pooler, 1, image.hidden_dim
            )
            no_grad["scoring_projection"] = dense_flops(image.num_patches, image.hidden_dim, embed)
            no_grad["scoring_similarity"] = dense_flops(image.num_patches, embed, 1)
        grad["image_tower"] = _tower_flops(
            kept + cls, image.hidden_dim, image.num_layers, image.mlp_ratio
        )
        grad["image_pooling"] = _pooling_flops(
            backbone.image_pooler, pooled(contrastive_tokens), image.hidden_dim
        )
        grad.update(_decoder_parts(model.decoder, kept, image.hidden_dim, length, text.hidden_dim,
                                   model.text_mask_ratio))
    else:
        # FLIP (CLIP's patch_dropout): the tower encodes the kept patches.
        dropout = getattr(model, "patch_dropout", 0.0)
        tokens = _num_kept(image.num_patches, dropout) + cls if dropout else full_tokens
        grad["image_tower"] = _tower_flops(tokens, image.hidden_dim, image.num_layers, image.mlp_ratio)
        grad["image_pooling"] = _pooling_flops(
            backbone.image_pooler, pooled(tokens), image.hidden_dim
        )
    grad["image_projection"] = dense_flops(1, image.hidden_dim, embed)
    grad["logits"] = dense_flops(1, embed, _logit_columns(model.contrastive, batch_size))
    return FlopCount(grad, no_grad)


def _decoder_parts(decoder, kept, image_width, length, text_width, text_mask_ratio=None):
    """A `CrossModalDecoder`'s forward FLOPs per sample, by part.

    The token head runs at the `num_text_slots(length, text_mask_ratio)`
    masked-token slots only (the models pass `text_positions`).
    """
    width = decoder.hidden_dim
    parts = {"decoder_image_projection": dense_flops(kept, image_width, width)}
    tokens = decoder.num_patches
    if length is not None:
        parts["decoder_text_projection"] = dense_flops(length, text_width, width)
        tokens += length
    parts["decoder_blocks"] = _tower_flops(tokens, width, decoder.num_layers, decoder.mlp_ratio)
    pixels = decoder.patch_size * decoder.patch_size * decoder.num_channels
    parts["pixel_head"] = dense_flops(decoder.num_patches, width, pixels)
    if length is not None:
        from keras_maeclip.layers.masking import num_text_slots

        slots = num_text_slots(length, text_mask_ratio)
        parts["token_head"] = dense_flops(slots, width, decoder.vocabulary_size)
    return parts


def _num_kept(num_patches, mask_ratio):
    from keras_maeclip.layers.masking import num_kept

    return num_kept(num_patches, mask_ratio)


def analytic_flops_per_sample(model, batch_size=None, sequence_length=None):
    """Training FLOPs per sample: matmuls + attention, backward = 2× forward.

    `flop_count(model, batch_size, sequence_length).train`: differentiated
    forward work counts 3 times (forward + backward), forward-only work
    (MAE-CLIP's similarity scoring) once. Ignores norms, activations,
    softmax, embedding lookups and the optimizer.

    Args:
        model: a `CLIP`, `MAECLIP`, `M3AE` or `MAE`.
        batch_size: int, the global batch size (contrastive models).
        sequence_length: int or `None`, the padded caption length; `None`
            takes the text tower's.

    Returns:
        int, FLOPs per training sample. Achieved FLOP/s of a step is
        `analytic_flops_per_sample(...) · batch_size / step_time`.

    Example:
    >>> model = CLIP.from_preset("clip_bench_small", compile=False)
    >>> round(analytic_flops_per_sample(model, 64) / 1e9, 2)  # GFLOP / sample
    5.23
    """
    return flop_count(model, batch_size, sequence_length).train
