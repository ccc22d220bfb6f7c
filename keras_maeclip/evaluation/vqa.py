"""Visual question answering by fine-tuning, as answer classification.

The protocol of Weers et al. 2023, Appendix D, in the concatenate-and-fuse
style of ViLT: a pretrained model's image tokens and question tokens are
projected to one width, concatenated after a learned BOS token, given
learned position and type (BOS / image / text) embeddings and fused by a
few pre-LN transformer blocks; a linear head on the BOS output scores every
answer of a fixed vocabulary (the training answers). The whole model is
trained with `fit` and sparse softmax cross-entropy.

```python
train = synthetic_vqa(512, seed=0, image_size=32)
test = synthetic_vqa(128, seed=1, image_size=32)
metrics, vqa_model = fine_tune_vqa(clip_model, train, test, epochs=10)
metrics["accuracy"], metrics["majority_baseline"]
```

Model code (`VQAFusion`) uses `keras.ops` only; the data helpers and the
metrics are NumPy.
"""

import collections

import keras
import keras_hub
import numpy as np
from keras import ops

from keras_maeclip.layers import ModalityEmbedding
from keras_maeclip.models._blocks import pre_ln_blocks
from keras_maeclip.models._validation import check_divisible, check_positive
from keras_maeclip.optimizers import AdamW
from keras_maeclip.training.layer_decay import LayerDecayAdamW, layer_decay_scales

# Rows of the fusion's type (modality) embedding.
BOS_TYPE, IMAGE_TYPE, TEXT_TYPE = 0, 1, 2
# The synthetic set's questions, in the fixed order of `synthetic.NUM_QA`.
SYNTHETIC_QUESTION_TYPES = ("colour", "count", "position")
_INPUT_KEYS = ("images", "token_ids", "padding_mask")


@keras.saving.register_keras_serializable(package="keras_maeclip")
class VQAFusion(keras.layers.Layer):
    """Fuses image and question tokens and scores answers from a BOS token.

    Image tokens `(batch, n, d_image)` and question tokens
    `(batch, length, d_text)` are each projected by a Dense layer to
    `hidden_dim` (the towers may differ in width) and get a learned type
    embedding (row 1 image, row 2 text); a learned BOS token (type row 0)
    is prepended, and a learned position embedding is added over the
    whole sequence `[BOS; image; text]`. `num_layers` pre-LN transformer
    blocks run with a padding mask in which the BOS and image tokens are
    always attended and text padding never is; a final LayerNorm and a
    Dense layer map the BOS output to `num_answers` logits.

    Args:
        num_answers: int. Size of the answer vocabulary (output logits).
        hidden_dim: int. Width of the fusion blocks; divisible by
            `num_heads`.
        num_heads: int. Attention heads per fusion block.
        sequence_length: int. Longest `1 + image tokens + text tokens`
            sequence the position table covers.
        num_layers: int. Number of fusion blocks, defaults to `2`.
        mlp_ratio: float. MLP width relative to `hidden_dim`, defaults to
            `4.0`.
        dropout: float. Dropout inside the blocks, defaults to `0.0`.
        layer_norm_epsilon: float, defaults to `1e-6`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call args:
        image_tokens: `(batch, n, d_image)`, `n` static.
        text_tokens: `(batch, length, d_text)`.
        padding_mask: optional `(batch, length)`, 1 on real text tokens;
            `None` attends to every text token.
        training: bool or `None`, for dropout.

    Returns:
        Logits `(batch, num_answers)`.

    Example:
    >>> fusion = VQAFusion(num_answers=5, hidden_dim=16, num_heads=2,
    ...                    sequence_length=12)
    >>> logits = fusion(keras.ops.zeros((2, 4, 32)), keras.ops.zeros((2, 7, 24)),
    ...                 keras.ops.ones((2, 7), "int32"))
    >>> tuple(logits.shape)
    (2, 5)

    References: Weers et al. 2023, Appendix D (VQA fine-tuning); Kim et al.
    2021 (ViLT) §3.1 (concatenated modalities with position and type
    embeddings, pooled from a prepended token).
    """

    def __init__(
        self,
        num_answers,
        hidden_dim,
        num_heads,
        sequence_length,
        num_layers=2,
        mlp_ratio=4.0,
        dropout=0.0,
        layer_norm_epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive(
            num_answers=num_answers,
            hidden_dim=hidden_dim,
            num_heads=num_heads,
            sequence_length=sequence_length,
            num_layers=num_layers,
        )
        check_divisible("hidden_dim", hidden_dim, "num_heads", num_heads)
        self.num_answers = int(num_answers)
        self.hidden_dim = int(hidden_dim)
        self.num_heads = int(num_heads)
        self.sequence_length = int(sequence_length)
        self.num_layers = int(num_layers)
        self.mlp_ratio = float(mlp_ratio)
        self.dropout = float(dropout)
        self.layer_norm_epsilon = float(layer_norm_epsilon)

        dtype = self.dtype_policy
        init = keras.initializers.RandomNormal(stddev=0.02)
        self.image_projection = keras.layers.Dense(
            self.hidden_dim, dtype=dtype, name="image_projection"
        )
        self.text_projection = keras.layers.Dense(
            self.hidden_dim, dtype=dtype, name="text_projection"
        )
        self.type_embedding = ModalityEmbedding(
            num_modalities=3, dtype=dtype, name="type_embedding"
        )
        self.position_embedding = keras_hub.layers.PositionEmbedding(
            self.sequence_length, initializer=init, dtype=dtype, name="position_embedding"
        )
        self.transformer_layers = pre_ln_blocks(
            self.num_layers,
            self.hidden_dim,
            self.num_heads,
            self.mlp_ratio,
            self.dropout,
            self.layer_norm_epsilon,
            dtype,
            prefix="fusion_layer",
        )
        self.final_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=dtype, name="final_norm"
        )
        self.answer_head = keras.layers.Dense(
            self.num_answers, dtype=dtype, name="answer_head"
        )

    def build(self, image_tokens_shape, text_tokens_shape):
        num_image, length = image_tokens_shape[1], text_tokens_shape[1]
        if num_image is not None and length is not None:
            if 1 + num_image + length > self.sequence_length:
                raise ValueError(
                    f"VQAFusion: 1 BOS + {num_image} image + {length} text tokens "
                    f"exceed sequence_length={self.sequence_length}; raise "
                    "sequence_length or shorten the questions."
                )
        width = (None, None, self.hidden_dim)
        self.image_projection.build(image_tokens_shape)
        self.text_projection.build(text_tokens_shape)
        self.bos_token = self.add_weight(
            name="bos_token",
            shape=(self.hidden_dim,),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        self.type_embedding.build(width)
        self.position_embedding.build(width)
        for layer in self.transformer_layers:
            layer.build(width)
        self.final_norm.build(width)
        self.answer_head.build((None, self.hidden_dim))
        self.built = True

    def call(self, image_tokens, text_tokens, padding_mask=None, training=None):
        num_image = image_tokens.shape[1]
        if num_image is None:
            raise ValueError(
                "VQAFusion needs a static number of image tokens; got "
                f"image_tokens of shape {image_tokens.shape}."
            )
        image = self.type_embedding(self.image_projection(image_tokens), modality=IMAGE_TYPE)
        text = self.type_embedding(self.text_projection(text_tokens), modality=TEXT_TYPE)
        bos = ops.broadcast_to(
            ops.cast(self.bos_token, image.dtype),
            (ops.shape(image)[0], 1, self.hidden_dim),
        )
        bos = self.type_embedding(bos, modality=BOS_TYPE)
        x = ops.concatenate([bos, image, text], axis=1)
        x = x + self.position_embedding(x)

        # BOS and image tokens are always attended; text padding never is.
        always = ops.ones_like(x[:, : 1 + num_image, 0], dtype="int32")
        if padding_mask is None:
            text_mask = ops.ones_like(text[:, :, 0], dtype="int32")
        else:
            text_mask = ops.cast(padding_mask, "int32")
        mask = ops.concatenate([always, text_mask], axis=1)
        for layer in self.transformer_layers:
            x = layer(x, padding_mask=mask, training=training)
        # LayerNorm is per token, so normalising the BOS token alone equals
        # normalising the sequence and then taking the BOS position.
        return self.answer_head(self.final_norm(x[:, 0]))

    def compute_output_shape(self, image_tokens_shape, text_tokens_shape):
        return (image_tokens_shape[0], self.num_answers)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_answers": self.num_answers,
                "hidden_dim": self.hidden_dim,
                "num_heads": self.num_heads,
                "sequence_length": self.sequence_length,
                "num_layers": self.num_layers,
                "mlp_ratio": self.mlp_ratio,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config


# --------------------------------------------------------------------------
# The VQA model
# --------------------------------------------------------------------------


def _towers(model):
    """The pretrained encoder(s) of a task and what the fusion needs of them.

    Returns a dict: `towers` (layers to freeze), `encode` (a function of the
    three symbolic inputs → `(image_tokens, text_tokens)`), `image_shape`,
    `width` and `heads` of the image tower, `num_image_tokens`,
    `text_length` (the text position table's length).
    """
    from keras_maeclip.models import ImageTextBackbone, M3AEBackbone

    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, ImageTextBackbone):
        image, text = backbone.image_encoder, backbone.text_encoder
        return {
            "towers": (image, text),
            "encode": lambda x: (
                image(x["images"]),
                text({"token_ids": x["token_ids"], "padding_mask": x["padding_mask"]}),
            ),
            "image_shape": (image.image_size, image.image_size, image.num_channels),
            "width": image.hidden_dim,
            "heads": image.num_heads,
            "num_image_tokens": image.num_patches + int(image.use_class_token),
            "text_length": text.sequence_length,
        }
    if isinstance(backbone, M3AEBackbone):
        # Called as a layer, the backbone is embed_patches + embed_tokens +
        # encode_tokens over all patches and the whole question.
        def encode(x):
            out = backbone(dict(x))
            return out["image_tokens"], out["text_tokens"]

        return {
            "towers": (backbone,),
            "encode": encode,
            "image_shape": (backbone.image_size, backbone.image_size, backbone.num_channels),
            "width": backbone.hidden_dim,
            "heads": backbone.num_heads,
            "num_image_tokens": backbone.num_patches,
            "text_length": backbone.sequence_length,
        }
    raise ValueError(
        f"VQA needs a text tower (CLIP, MAECLIP, M3AE); {type(model).__name__} "
        "has none. Fine-tune an image-text model instead."
    )


def build_vqa_model(
    model,
    num_answers,
    num_layers=2,
    num_heads=None,
    hidden_dim=None,
    freeze_towers=False,
    mlp_ratio=4.0,
    dropout=0.0,
    name="vqa_model",
):
    """A VQA classifier on top of a pretrained image-text model's towers.

    The towers are shared, not copied: training the VQA model updates the
    pretrained model's weights too (save the task first to keep them). For
    `CLIP` / `MAECLIP` the image and text encoders' full token outputs
    (class token included, if any) feed a `VQAFusion`; for `M3AE` the shared
    encoder runs over all patches and the question, and its image and text
    outputs feed the fusion, whose type embedding still marks the
    modalities.

    `freeze_towers` sets the towers' `trainable` flag, on the shared layers:
    `True` freezes them (a probe of the pretrained tokens), `False` (the
    default, as in the paper, which fine-tunes the whole model) makes them
    trainable again, whatever they were.

    Args:
        model: a `CLIP`, `MAECLIP` or `M3AE` task.
        num_answers: int, the answer vocabulary size.
        num_layers: int, fusion blocks, defaults to `2`.
        num_heads: int or `None` (the image tower's heads).
        hidden_dim: int or `None` (the image tower's width).
        freeze_towers: bool, defaults to `False`.
        mlp_ratio: float, the fusion blocks' MLP ratio, defaults to `4.0`.
        dropout: float, dropout in the fusion blocks, defaults to `0.0`.
        name: str, the model's name.

    Returns:
        A functional `keras.Model`: `{"images", "token_ids",
        "padding_mask"}` (preprocessed, see `vqa_inputs`) → logits
        `(batch, num_answers)`.

    Example:
    ```python
    vqa = build_vqa_model(clip_model, num_answers=18)
    logits = vqa(vqa_inputs(clip_model, images, questions))  # (n, 18)
    ```

    References: Weers et al. 2023, Appendix D; Kim et al. 2021 (ViLT).
    """
    parts = _towers(model)
    width = parts["width"] if hidden_dim is None else hidden_dim
    heads = parts["heads"] if num_heads is None else num_heads
    for tower in parts["towers"]:
        tower.trainable = not freeze_towers
    inputs = {
        "images": keras.Input(shape=parts["image_shape"], name="images"),
        "token_ids": keras.Input(shape=(None,), dtype="int32", name="token_ids"),
        "padding_mask": keras.Input(shape=(None,), dtype="int32", name="padding_mask"),
    }
    image_tokens, text_tokens = parts["encode"](inputs)
    fusion = VQAFusion(
        num_answers=num_answers,
        hidden_dim=width,
        num_heads=heads,
        sequence_length=1 + parts["num_image_tokens"] + parts["text_length"],
        num_layers=num_layers,
        mlp_ratio=mlp_ratio,
        dropout=dropout,
        name="vqa_fusion",
    )
    logits = fusion(image_tokens, text_tokens, inputs["padding_mask"])
    return keras.Model(inputs, logits, name=name)


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def synthetic_vqa(num_examples, seed=0, image_size=64, with_types=False, **scene_kwargs):
    """The synthetic set's question-answer pairs, one row per question.

    Each image has `synthetic.NUM_QA` questions (colour, count, position, in
    that order); the image is repeated once per question.

    Args:
        num_examples: int, images to draw (rows = `3 * num_examples`).
        seed: int, the dataset seed.
        image_size: int, image side in pixels.
        with_types: bool. Also return each row's question type (see
            `SYNTHETIC_QUESTION_TYPES`).
        **scene_kwargs: `min_objects`, `max_objects`, `sizes` of `synthetic_dataset`.

    Returns:
        `(images, questions, answers)`: uint8 `(rows, S, S, 3)` and two str
        arrays `(rows,)`; plus `question_types` (str `(rows,)`) when
        `with_types`.

    Example:
    >>> images, questions, answers = synthetic_vqa(2, image_size=16)
    >>> images.shape, questions[1]
    ((6, 16, 16, 3), 'how many shapes are there?')
    """
    from keras_maeclip.data import synthetic

    data = synthetic.synthetic_dataset(num_examples, seed=seed, image_size=image_size, **scene_kwargs)
    batch = next(data.batch(num_examples).as_numpy_iterator())
    per_image = batch["questions"].shape[1]
    images = np.repeat(batch["image"], per_image, axis=0)
    questions = np.array([q.decode() for q in batch["questions"].reshape(-1)])
    answers = np.array([a.decode() for a in batch["answers"].reshape(-1)])
    if not with_types:
        return images, questions, answers
    types = np.tile(np.array(SYNTHETIC_QUESTION_TYPES[:per_image]), num_examples)
    return images, questions, answers, types


def answer_vocabulary(answers):
    """The sorted list of distinct answers (str)."""
    answers = np.asarray(answers).reshape(-1)
    if answers.size == 0:
        raise ValueError("answer_vocabulary: answers is empty; pass the training answers.")
    return sorted({str(a) for a in answers})


def encode_answers(answers, vocabulary):
    """Answer strings → int ids in `vocabulary`; `-1` for unseen answers.

    Args:
        answers: str array `(n,)`.
        vocabulary: list of str from `answer_vocabulary`.

    Returns:
        int32 array `(n,)`; an id of `-1` never equals a prediction, so an
        unseen answer always counts as wrong.
    """
    index = {answer: i for i, answer in enumerate(vocabulary)}
    return np.array([index.get(str(a), -1) for a in np.asarray(answers).reshape(-1)], np.int32)


def vqa_inputs(model, images, questions, batch_size=1024):
    """Preprocessed VQA inputs through the model's preprocessor.

    Args:
        model: a task with an `ImageTextPreprocessor` (`model.preprocessor`).
        images: uint8/float array `(n, H, W, 3)` in [0, 255].
        questions: str array `(n,)`, tokenized as captions.
        batch_size: int, rows preprocessed at once.

    Returns:
        dict of NumPy arrays `{"images", "token_ids", "padding_mask"}`.
    """
    if getattr(model, "preprocessor", None) is None:
        raise ValueError(
            "vqa_inputs needs model.preprocessor (a ImageTextPreprocessor) to "
            "resize the images and tokenize the questions; build the task "
            "with preprocessor=..."
        )
    images = np.asarray(images)
    questions = np.asarray(questions).reshape(-1)
    if len(images) != len(questions) or len(questions) == 0:
        raise ValueError(
            f"vqa_inputs: {len(images)} images but {len(questions)} questions; "
            "pass one (non-empty) question per image row."
        )
    chunks = collections.defaultdict(list)
    for start in range(0, len(questions), batch_size):
        out = model.preprocessor(
            {
                "images": images[start : start + batch_size],
                "captions": questions[start : start + batch_size],
            }
        )
        for key in _INPUT_KEYS:
            chunks[key].append(ops.convert_to_numpy(out[key]))
    return {key: np.concatenate(chunks[key]) for key in _INPUT_KEYS}


# --------------------------------------------------------------------------
# Fine-tuning and metrics
# --------------------------------------------------------------------------


def majority_baseline(train_answers, test_answers):
    """Share of test answers equal to the most frequent training answer.

    Ties between equally frequent training answers go to the one first in
    sorted order.
    """
    counts = collections.Counter(str(a) for a in np.asarray(train_answers).reshape(-1))
    if not counts:
        raise ValueError("majority_baseline: train_answers is empty.")
    top = max(sorted(counts), key=counts.__getitem__)
    test = np.asarray(test_answers).reshape(-1).astype(str)
    return float(np.mean(test == top))


def vqa_metrics(logits, answer_ids, question_types=None):
    """Top-1 accuracy of answer logits; ids of `-1` (unseen) count as wrong.

    Args:
        logits: array `(n, num_answers)`.
        answer_ids: int array `(n,)` from `encode_answers`.
        question_types: optional str array `(n,)`; adds
            `"accuracy/<type>"` per distinct type.

    Returns:
        dict with `"accuracy"` and `"unseen_answers"` (the count of `-1`
        ids), plus the per-type accuracies.
    """
    logits = np.asarray(logits)
    answer_ids = np.asarray(answer_ids).reshape(-1)
    if len(logits) != len(answer_ids) or len(answer_ids) == 0:
        raise ValueError(f"vqa_metrics: {len(logits)} rows of logits but {len(answer_ids)} answers.")
    correct = np.argmax(logits, axis=-1) == answer_ids
    out = {"accuracy": float(correct.mean()), "unseen_answers": int((answer_ids < 0).sum())}
    if question_types is not None:
        types = np.asarray(question_types).reshape(-1).astype(str)
        if len(types) != len(answer_ids):
            raise ValueError(
                f"vqa_metrics: {len(types)} question_types but {len(answer_ids)} answers."
            )
        for kind in sorted(set(types)):
            out[f"accuracy/{kind}"] = float(correct[types == kind].mean())
    return out


def _check_split(name, split):
    if not isinstance(split, (tuple, list)) or len(split) != 3:
        raise ValueError(
            f"fine_tune_vqa: {name} must be an (images, questions, answers) "
            f"tuple of arrays; got {type(split).__name__}"
            + (f" of length {len(split)}." if isinstance(split, (tuple, list)) else ".")
        )
    images, questions, answers = (np.asarray(a) for a in split)
    if not len(images) == len(questions) == len(answers) or len(answers) == 0:
        raise ValueError(
            f"fine_tune_vqa: {name} has {len(images)} images, {len(questions)} "
            f"questions and {len(answers)} answers; they must be equal and non-zero."
        )
    return images, questions, answers


def fine_tune_vqa(
    model,
    train,
    test,
    epochs=10,
    batch_size=64,
    learning_rate=1e-4,
    weight_decay=0.01,
    freeze_towers=False,
    num_layers=2,
    num_heads=None,
    hidden_dim=None,
    question_types=None,
    seed=0,
    layer_decay=None,
    verbose=0,
):
    """Fine-tune a VQA classifier on one split and score it on another.

    The answer vocabulary is the training answers (`answer_vocabulary`);
    test answers outside it are counted (`unseen_answers`) and always
    wrong. The VQA model (`build_vqa_model`, sharing the task's towers) is
    trained with AdamW and sparse softmax cross-entropy through `fit`.
    `keras.utils.set_random_seed(seed)` is called first, so the fusion's
    initialisation and the shuffling repeat.

    What it does to `model`: the VQA model shares the task's towers, so
    with `freeze_towers=False` (the default) training updates the task's
    tower weights in place; the towers' `trainable` flags are left at
    `not freeze_towers` (see `build_vqa_model`); the global random seed is
    set. The projections, pooling heads, temperature and decoder are not
    touched. To fine-tune and keep the pretrained model, run it inside
    `keras_maeclip.evaluation.suite.preserved_state(model)` (as `run_suite`
    and `suite.vqa` do), or on a copy loaded from the saved preset.

    Args:
        model: a `CLIP`, `MAECLIP` or `M3AE` task with a preprocessor.
        train: `(images, questions, answers)` arrays (see `synthetic_vqa`).
        test: `(images, questions, answers)` arrays.
        epochs, batch_size: the `fit` schedule.
        learning_rate, weight_decay: AdamW's.
        freeze_towers: bool, see `build_vqa_model` (default `False`: the
            paper fine-tunes the towers).
        num_layers, num_heads, hidden_dim: see `build_vqa_model`.
        question_types: optional str array, one type per test row (e.g.
            the fourth output of `synthetic_vqa(..., with_types=True)`);
            adds `"accuracy/<type>"`.
        seed: int, the global Keras seed set before building.
        layer_decay: float in (0, 1] or `None` (default, one learning
            rate). Layer-wise learning-rate decay of the towers
            (`keras_maeclip.training.layer_decay_scales`, MAE's
            fine-tuning `lr_decay`): block `i` of `L` trains at
            `learning_rate · layer_decay ** (L - i)`, the fusion head at
            the full rate.
        verbose: `fit`'s progress output (0 silent, the default; 1 Keras'
            live bar; 2 one line per epoch: `keras_maeclip.backend.fit_verbosity`).

    Returns:
        `(metrics, vqa_model)`: `metrics` is a dict with `"accuracy"` (test
        top-1), `"train_accuracy"` (top-1 on the training split after
        training, in inference mode), `"majority_baseline"`,
        `"num_answers"` and `"unseen_answers"` (plus per-type accuracies);
        `vqa_model` is the trained `keras.Model` with its `answers`
        attribute set to the vocabulary (logit `i` scores `answers[i]`;
        `model.save` does not store this list, keep it alongside).

    References: Weers et al. 2023, Appendix D.
    """
    train_images, train_questions, train_answers = _check_split("train", train)
    test_images, test_questions, test_answers = _check_split("test", test)
    keras.utils.set_random_seed(seed)
    vocabulary = answer_vocabulary(train_answers)
    train_ids = encode_answers(train_answers, vocabulary)
    test_ids = encode_answers(test_answers, vocabulary)
    train_x = vqa_inputs(model, train_images, train_questions)
    test_x = vqa_inputs(model, test_images, test_questions)

    vqa_model = build_vqa_model(
        model,
        len(vocabulary),
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        freeze_towers=freeze_towers,
    )
    vqa_model.answers = list(vocabulary)
    if layer_decay is None:
        optimizer = AdamW(learning_rate, weight_decay=weight_decay)
    else:
        scales = layer_decay_scales(model, layer_decay)
        trained = {v.path for v in vqa_model.trainable_variables}
        optimizer = LayerDecayAdamW(
            learning_rate, weight_decay=weight_decay,
            lr_scales={path: scale for path, scale in scales.items() if path in trained},
        )
    vqa_model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    vqa_model.fit(train_x, train_ids, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=verbose)

    # One predict over both splits: one compiled function instead of two.
    both = {key: np.concatenate([train_x[key], test_x[key]]) for key in _INPUT_KEYS}
    logits = vqa_model.predict(both, batch_size=256, verbose=0)
    train_logits, test_logits = logits[: len(train_ids)], logits[len(train_ids) :]
    metrics = vqa_metrics(test_logits, test_ids, question_types)
    metrics["train_accuracy"] = vqa_metrics(train_logits, train_ids)["accuracy"]
    metrics["majority_baseline"] = majority_baseline(train_answers, test_answers)
    metrics["num_answers"] = len(vocabulary)
    return metrics, vqa_model
