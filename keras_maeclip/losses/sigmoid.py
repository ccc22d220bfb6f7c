"""Pairwise sigmoid (SigLIP) loss, in chunks of the text batch.

Every image–text pair is an independent binary problem: the logit
`z_ij = t · <x_i, y_j> + b` should be positive for the paired caption
(`i == j`) and negative otherwise, and the loss is

    L = -1/n · Σ_ij log σ(ℓ_ij · z_ij),   ℓ_ij = +1 if i == j else -1

(Zhai et al. 2023, Algorithm 1). Because `-log σ(-z) = softplus(z)` and
`-log σ(z) = softplus(z) - z`, this is

    L = 1/n · (Σ_ij softplus(z_ij) - Σ_i z_ii),

a sum over pairs that splits over any partition of the texts. The loss is
computed one chunk of texts at a time, so only `rows × chunk` logits exist
at once: on one device there is one chunk (the plain form); under data
parallelism a chunk is one replica's texts, which is big_vision's ring of
chunks (each device pairs its images with every other device's texts in
turn) without the whole global logits matrix ever being formed.
"""

from keras import ops

NEGATIVES = ("global", "local")
# Cosine similarities closer than this are ties for the top-1 accuracies.
_TIE = 1e-6


def _chunks(x, num_chunks):
    """`x` split along axis 0 into `num_chunks` equal consecutive chunks."""
    if num_chunks == 1:
        return [x]
    rows = x.shape[0]
    if rows is not None and rows % num_chunks:
        raise ValueError(
            f"The batch of {rows} rows does not split into {num_chunks} equal "
            "chunks (one per replica); use a batch that is a multiple of the "
            "number of replicas."
        )
    parts = ops.reshape(x, (num_chunks, -1, x.shape[-1]))
    return [parts[k] for k in range(num_chunks)]


def chunked_sigmoid_loss(
    image_rows, text_rows, text_chunks, image_chunks, logit_scale, logit_bias
):
    """Sigmoid loss of `image_rows` against every text in `text_chunks`.

    The building block of both the single-device form and a replica's share
    under data parallelism. Row `i` of `image_rows` is paired with row `i`
    of `text_rows`; every text of `text_chunks` (which include
    `text_rows`) is a candidate, one chunk at a time.

    Args:
        image_rows: `(n, dim)` L2-normalised images whose loss is computed.
        text_rows: `(n, dim)` their captions.
        text_chunks: list of `(m, dim)` texts, together all candidates.
        image_chunks: list of `(m, dim)` images, together all candidates
            for the text→image accuracy of `text_rows`.
        logit_scale: scalar multiplier `t` (not its log).
        logit_bias: scalar bias `b`.

    Returns:
        A dict of float32 scalars: `loss` (`(Σ softplus(z) − Σ z_ii) / n`),
        `image_to_text_accuracy` and `text_to_image_accuracy` (in-batch
        top-1 over the candidates).
    """
    image_rows = ops.cast(image_rows, "float32")
    text_rows = ops.cast(text_rows, "float32")
    scale = ops.cast(logit_scale, "float32")
    bias = ops.cast(logit_bias, "float32")
    positives = ops.sum(image_rows * text_rows, axis=-1)
    total = ops.zeros((), "float32")
    best_text = None
    for chunk in text_chunks:
        similarity = ops.matmul(image_rows, ops.transpose(ops.cast(chunk, "float32")))
        total = total + ops.sum(ops.softplus(scale * similarity + bias))
        row_max = ops.max(similarity, axis=-1)
        best_text = row_max if best_text is None else ops.maximum(best_text, row_max)
    best_image = None
    for chunk in image_chunks:
        similarity = ops.matmul(text_rows, ops.transpose(ops.cast(chunk, "float32")))
        row_max = ops.max(similarity, axis=-1)
        best_image = row_max if best_image is None else ops.maximum(best_image, row_max)
    rows = ops.cast(ops.shape(image_rows)[0], "float32")
    loss = (total - ops.sum(scale * positives + bias)) / rows
    # The positive's similarity is summed apart from the chunks' matmuls,
    # in another order: within _TIE of the best counts as the best.
    return {
        "loss": loss,
        "image_to_text_accuracy": ops.mean(ops.cast(positives >= best_text - _TIE, "float32")),
        "text_to_image_accuracy": ops.mean(ops.cast(positives >= best_image - _TIE, "float32")),
    }


def sigmoid_loss(
    image_embeddings,
    text_embeddings,
    logit_scale,
    logit_bias,
    negatives="global",
    local_batch_size=None,
    num_chunks=1,
):
    """SigLIP's pairwise sigmoid loss between paired image and text embeddings.

    `-1/n Σ_ij log σ(ℓ_ij (t <x_i, y_j> + b))` with `ℓ_ii = 1` and `-1`
    elsewhere, over the whole batch (`"global"`) or, for `"local"`, the
    mean of the same loss inside each block of `local_batch_size`
    consecutive rows. With `num_chunks > 1` the global sum runs over that
    many consecutive chunks of the texts one at a time (the same value,
    fewer logits alive at once).

    Args:
        image_embeddings: `(batch, dim)`, L2-normalised.
        text_embeddings: `(batch, dim)`, L2-normalised; row `i` pairs with
            image `i`.
        logit_scale: scalar `t` (the multiplier, not its log).
        logit_bias: scalar `b`.
        negatives: `"global"` or `"local"`. Defaults to `"global"`.
        local_batch_size: int, the block size for `"local"`.
        num_chunks: int. Text chunks of the global sum, defaults to `1`.

    Returns:
        A dict of float32 scalars: `loss`, `image_to_text_accuracy`,
        `text_to_image_accuracy`.

    Example:
    >>> import numpy as np
    >>> z = np.eye(4, dtype="float32")
    >>> out = sigmoid_loss(z, z, 10.0, -10.0)
    >>> round(float(out["loss"]), 4)  # 4 positives at 0, 12 negatives at -10
    0.6932

    References: Zhai et al. 2023 (SigLIP), Algorithm 1 and §3.3 (chunked
    implementation); big_vision `trainers/proj/image_text/siglip.py`;
    keras-hub `SigLIPLoss`.
    """
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives={negatives!r}; use one of {NEGATIVES}.")
    if negatives == "global":
        return chunked_sigmoid_loss(
            image_embeddings,
            text_embeddings,
            _chunks(text_embeddings, num_chunks),
            _chunks(image_embeddings, num_chunks),
            logit_scale,
            logit_bias,
        )
    if local_batch_size is None or int(local_batch_size) < 1:
        raise ValueError(
            "negatives='local' needs a positive local_batch_size (the "
            f"per-replica batch); got {local_batch_size!r}."
        )
    block = int(local_batch_size)
    batch = image_embeddings.shape[0]
    if batch is not None and batch % block:
        raise ValueError(
            f"local negatives: batch size {batch} is not a multiple of "
            f"local_batch_size={block}; use a batch that is (the "
            "per-replica batch times the number of replicas)."
        )
    image = ops.cast(ops.reshape(image_embeddings, (-1, block, image_embeddings.shape[-1])), "float32")
    text = ops.cast(ops.reshape(text_embeddings, (-1, block, text_embeddings.shape[-1])), "float32")
    scale = ops.cast(logit_scale, "float32")
    bias = ops.cast(logit_bias, "float32")
    similarity = ops.einsum("nid,njd->nij", image, text)
    positives = ops.diagonal(similarity, axis1=-2, axis2=-1)
    # Each block's loss is its sum over pairs divided by the block: their
    # mean is the sum over all blocks divided by the batch.
    total = ops.sum(ops.softplus(scale * similarity + bias)) - ops.sum(scale * positives + bias)
    rows = ops.cast(ops.shape(image_embeddings)[0], "float32")
    return {
        "loss": total / rows,
        "image_to_text_accuracy": ops.mean(
            ops.cast(positives >= ops.max(similarity, axis=-1), "float32")
        ),
        "text_to_image_accuracy": ops.mean(
            ops.cast(positives >= ops.max(similarity, axis=-2), "float32")
        ),
    }
