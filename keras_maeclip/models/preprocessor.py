"""Preprocessing that runs in `tf.data`: tokenizer, image converter, preprocessor.

This module uses TensorFlow ops whatever the Keras backend: it turns images
and captions into model inputs inside `tf.data.Dataset.map` (or eagerly).
"""

import keras
import keras_hub
import tensorflow as tf
from keras_hub.src.utils.tensor_utils import preprocessing_function

from keras_maeclip.models.clip_backbone import ImageTextBackbone

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
MASK_TOKEN = "[MASK]"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN)


def learn_vocabulary(captions, vocabulary_size=30522):
    """Learn a lowercase WordPiece vocabulary from a caption corpus.

    The special tokens come first, `[PAD]` at id 0. A small corpus yields a
    smaller vocabulary than asked for; size the text tower with
    `len(vocabulary)`.

    Args:
        captions: list of str or a `tf.data.Dataset` of scalar strings.
        vocabulary_size: int. Upper bound on the vocabulary size, defaults to
            `30522` (BERT's).

    Returns:
        list of str, the vocabulary.

    Example:
    >>> vocab = learn_vocabulary(["a red circle", "a blue square"], 50)
    >>> vocab[:5]
    ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']

    References: keras-hub `compute_word_piece_vocabulary` (tensorflow-text).
    """
    if isinstance(captions, (list, tuple)) and not captions:
        raise ValueError(
            "learn_vocabulary: the caption list is empty; pass at least one "
            "caption."
        )
    if vocabulary_size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(
            f"vocabulary_size={vocabulary_size} leaves no room beyond the "
            f"{len(SPECIAL_TOKENS)} special tokens."
        )
    if isinstance(captions, (list, tuple)):
        # keras-hub reads a list of strings as file names; wrap the text.
        captions = tf.data.Dataset.from_tensor_slices(list(captions))
    return keras_hub.tokenizers.compute_word_piece_vocabulary(
        captions,
        vocabulary_size,
        lowercase=True,
        strip_accents=True,
        reserved_tokens=list(SPECIAL_TOKENS),
    )


def caption_tokenizer(vocabulary, **kwargs):
    """A lowercasing `keras_hub.tokenizers.WordPieceTokenizer`.

    Args:
        vocabulary: list of str or path to a vocabulary file; must contain
            the special tokens.
        **kwargs: passed to `WordPieceTokenizer`.

    Example:
    >>> tok = caption_tokenizer(learn_vocabulary(["a red circle"], 40))
    >>> tok.id_to_token(int(tok("a red circle")[0]))
    'a'
    """
    kwargs.setdefault("lowercase", True)
    kwargs.setdefault("strip_accents", True)
    kwargs.setdefault("oov_token", UNK_TOKEN)
    if isinstance(vocabulary, (list, tuple)):
        _check_special_tokens(vocabulary)
    tokenizer = keras_hub.tokenizers.WordPieceTokenizer(vocabulary=vocabulary, **kwargs)
    _check_special_tokens(tokenizer.get_vocabulary())
    return tokenizer


def _check_special_tokens(vocabulary):
    missing = [t for t in SPECIAL_TOKENS if t not in vocabulary]
    if missing:
        raise ValueError(
            f"The vocabulary lacks the special tokens {missing}; learn it with "
            "keras_maeclip.models.learn_vocabulary or add them."
        )


def text_mask_ids(tokenizer=None):
    """`(mask_token_id, special_token_ids)` for text masking.

    With a tokenizer, the ids of its `[MASK]` and special tokens; without
    one, the layout of `learn_vocabulary` (the special tokens at ids 0–4,
    `[MASK]` = 4).

    Example:
    >>> text_mask_ids()
    (4, (0, 1, 2, 3, 4))
    """
    if tokenizer is None:
        return SPECIAL_TOKENS.index(MASK_TOKEN), tuple(range(len(SPECIAL_TOKENS)))
    ids = tuple(int(tokenizer.token_to_id(t)) for t in SPECIAL_TOKENS)
    return int(tokenizer.token_to_id(MASK_TOKEN)), ids


def resolve_text_mask_ids(preprocessor, vocabulary_size, mask_token_id=None, special_token_ids=None):
    """The masked-text ids a model uses: given ones, else the tokenizer's.

    Args:
        preprocessor: an `ImageTextPreprocessor` or `None` (`learn_vocabulary`'s
            layout).
        vocabulary_size: int, the model's vocabulary, to check the ids.
        mask_token_id: int or `None`.
        special_token_ids: ids or `None`.

    Returns:
        `(mask_token_id, special_token_ids)` as an int and a tuple of ints.
    """
    if mask_token_id is None or special_token_ids is None:
        default_mask, default_special = text_mask_ids(getattr(preprocessor, "tokenizer", None))
        mask_token_id = default_mask if mask_token_id is None else mask_token_id
        special_token_ids = default_special if special_token_ids is None else special_token_ids
    mask_token_id = int(mask_token_id)
    if not 0 <= mask_token_id < vocabulary_size:
        raise ValueError(
            f"mask_token_id={mask_token_id} is outside the vocabulary "
            f"(vocabulary_size={vocabulary_size}); size the model to the "
            "tokenizer's vocabulary."
        )
    return mask_token_id, tuple(int(i) for i in special_token_ids)


# MAE and most ViT recipes normalise with the ImageNet statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_converter(image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """A `keras_hub.layers.ImageConverter` that resizes and normalises.

    Pixels in [0, 255] become `(pixel / 255 - mean) / std`.

    Args:
        image_size: int. Output side length.
        mean: three floats, per-channel mean of [0, 1] pixels.
        std: three floats, per-channel standard deviation.

    Example:
    >>> conv = image_converter(32)
    >>> conv(keras.ops.zeros((1, 64, 64, 3))).shape
    (1, 32, 32, 3)
    """
    scale = [1.0 / (255.0 * s) for s in std]
    offset = [-m / s for m, s in zip(mean, std)]
    return keras_hub.layers.ImageConverter(
        image_size=(int(image_size), int(image_size)),
        scale=scale,
        offset=offset,
        crop_to_aspect_ratio=True,
        interpolation="bilinear",
        antialias=True,
    )


@keras.saving.register_keras_serializable(package="keras_maeclip")
class ImageTextPreprocessor(keras_hub.models.Preprocessor):
    """Turns `{"images", "captions"}` into `{"images", "token_ids", "padding_mask"}`.

    The preprocessor of `CLIP` and `MAECLIP` (not keras-hub's
    `keras_hub.models.CLIPPreprocessor`, which pairs with its own
    `CLIPBackbone`). Called `CLIPPreprocessor` before the rename; that name
    stays importable as an alias and old presets load as this class.

    Images (uint8 or float in [0, 255], `(H, W, 3)` or `(batch, H, W, 3)`)
    are resized (centre crop to square, bilinear, antialiased) and
    normalised by the `image_converter`. Captions are WordPiece-tokenized,
    wrapped in `[CLS] ... [SEP]`, truncated or padded with `[PAD]` to
    `sequence_length`; `padding_mask` is 1 on real tokens. Either key may be
    absent (e.g. class prompts for zero-shot have captions only).

    Usable eagerly on a batch or inside `tf.data.Dataset.map` on any backend.

    Args:
        tokenizer: a `keras_hub.tokenizers.WordPieceTokenizer` whose
            vocabulary contains `[PAD]`, `[CLS]`, `[SEP]`.
        image_converter: a `keras_hub.layers.ImageConverter`; see
            `image_converter()` in this module.
        sequence_length: int. Length of `token_ids`, defaults to `32`.
        **kwargs: base layer arguments.

    Example:
    >>> tok = caption_tokenizer(learn_vocabulary(["a red circle"], 40))
    >>> pre = ImageTextPreprocessor(tok, image_converter(32), sequence_length=8)
    >>> out = pre({"images": np.zeros((2, 64, 64, 3), "uint8"),
    ...            "captions": ["a red circle", "a circle"]})
    >>> out["images"].shape, out["token_ids"].shape
    ((2, 32, 32, 3), (2, 8))
    """

    backbone_cls = ImageTextBackbone
    tokenizer_cls = keras_hub.tokenizers.WordPieceTokenizer
    image_converter_cls = keras_hub.layers.ImageConverter

    def __init__(self, tokenizer, image_converter=None, sequence_length=32, **kwargs):
        super().__init__(**kwargs)
        self.tokenizer = tokenizer
        self.image_converter = image_converter
        self.sequence_length = int(sequence_length)
        if self.sequence_length < 3:
            raise ValueError(
                f"sequence_length={sequence_length} leaves no room for a "
                "token between [CLS] and [SEP]; use at least 3."
            )
        self.packer = None

    def build(self, input_shape=None):
        # Built lazily: a tokenizer loaded from a preset gets its vocabulary
        # only after construction.
        self.packer = keras_hub.layers.StartEndPacker(
            sequence_length=self.sequence_length,
            start_value=self.tokenizer.token_to_id(CLS_TOKEN),
            end_value=self.tokenizer.token_to_id(SEP_TOKEN),
            pad_value=self.tokenizer.token_to_id(PAD_TOKEN),
            return_padding_mask=True,
        )
        self.built = True

    @preprocessing_function
    def call(self, x, y=None, sample_weight=None):
        if not isinstance(x, dict) or not ({"images", "captions"} & set(x)):
            got = sorted(x) if isinstance(x, dict) else type(x).__name__
            raise ValueError(
                "ImageTextPreprocessor expects a dict with 'images' and/or "
                f"'captions'; got {got}."
            )
        if "token_ids" in x:
            raise ValueError(
                "ImageTextPreprocessor got inputs that already hold 'token_ids' "
                "(already preprocessed). Pass raw {'images', 'captions'} "
                "batches, or set model.preprocessor = None to feed "
                "preprocessed ones."
            )
        out = {}
        if "images" in x:
            out["images"] = self._images(x["images"])
        if "captions" in x:
            out.update(self._captions(x["captions"]))
        return keras.utils.pack_x_y_sample_weight(out, y, sample_weight)

    def _images(self, images):
        images = tf.convert_to_tensor(images)
        rank = images.shape.rank
        if rank not in (3, 4) or images.shape[-1] != 3:
            raise ValueError(
                "images must be (height, width, 3) or (batch, height, width, "
                f"3) RGB; got shape {tuple(images.shape)}. Convert grayscale "
                "or RGBA to RGB first."
            )
        if self.image_converter is None:
            raise ValueError(
                "This preprocessor has no image_converter; pass "
                "image_converter=keras_maeclip.models.image_converter(size)."
            )
        return self.image_converter(tf.cast(images, "float32"))

    def _captions(self, captions):
        captions = tf.convert_to_tensor(captions)
        if captions.shape.rank is not None and captions.shape.rank > 1:
            raise ValueError(
                "captions must be a string or a 1-D batch of strings; got "
                f"shape {tuple(captions.shape)}."
            )
        if captions.shape.rank == 1 and captions.shape[0] == 0:
            raise ValueError("captions is empty; pass at least one caption.")
        token_ids, padding_mask = self.packer(self.tokenizer(captions))
        return {
            "token_ids": token_ids,
            "padding_mask": tf.cast(padding_mask, "int32"),
        }

    def get_config(self):
        config = super().get_config()
        config["sequence_length"] = self.sequence_length
        return config


# Its name before the rename (see `ImageTextBackbone`'s note).
CLIPPreprocessor = ImageTextPreprocessor
keras.saving.get_custom_objects()["keras_maeclip>CLIPPreprocessor"] = ImageTextPreprocessor
