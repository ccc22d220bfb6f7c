import math

import keras
import numpy as np
import pytest

from keras_maeclip.data import synthetic
from keras_maeclip.evaluation.vqa import (
    SYNTHETIC_QUESTION_TYPES,
    VQAFusion,
    answer_vocabulary,
    build_vqa_model,
    encode_answers,
    fine_tune_vqa,
    majority_baseline,
    synthetic_vqa,
    vqa_inputs,
    vqa_metrics,
)
from keras_maeclip.models import (
    MAE,
    M3AE,
    ImageTextPreprocessor,
    caption_tokenizer,
    image_converter,
    learn_vocabulary,
)
from tests.models.test_m3ae import SMALL as M3AE_SMALL
from tests.models.test_mae import SMALL as MAE_SMALL
from tests.tiny import CAPTIONS, TINY, make_clip


def to_np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def splits():
    """16 training and 8 test scenes at 16², 3 questions each."""
    return synthetic_vqa(16, seed=0, image_size=16), synthetic_vqa(8, seed=1, image_size=16, with_types=True)


@pytest.fixture(scope="module")
def qa_preprocessor(splits):
    """16² images, 12 tokens, a vocabulary that knows the question words."""
    (_, train_questions, _), (_, test_questions, _, _) = splits
    vocabulary = learn_vocabulary(list(CAPTIONS) + list(train_questions) + list(test_questions), 200)
    return ImageTextPreprocessor(caption_tokenizer(vocabulary), image_converter(16), sequence_length=12)


def vocabulary_size_of(preprocessor):
    return preprocessor.tokenizer.vocabulary_size()


def logits_of(vqa_model, inputs):
    return to_np(vqa_model(inputs, training=False))


def check_save_and_load(vqa_model, inputs, tmp_path):
    """The whole functional model (towers nested) saves and reloads exactly."""
    path = str(tmp_path / "vqa.keras")
    vqa_model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(logits_of(restored, inputs), logits_of(vqa_model, inputs))


def check_padding_image_and_question(vqa_model, inputs, other_questions, vocabulary_size):
    """Padding ids are ignored; images and questions are not.

    `other_questions` holds the same images with different questions.
    """
    before = logits_of(vqa_model, inputs)
    padding = inputs["padding_mask"] == 0
    assert padding.any(axis=1).all(), "every test question must have padding"
    rng = np.random.default_rng(0)
    noisy = dict(inputs, token_ids=np.where(padding, rng.integers(5, vocabulary_size, padding.shape),
                                             inputs["token_ids"]).astype("int32"))
    np.testing.assert_allclose(logits_of(vqa_model, noisy), before, atol=1e-5)
    other_image = dict(inputs, images=np.roll(inputs["images"], 1, axis=0))
    assert (np.abs(logits_of(vqa_model, other_image) - before).max(axis=1) > 1e-4).all()
    np.testing.assert_array_equal(other_questions["images"], inputs["images"])
    assert (np.abs(logits_of(vqa_model, other_questions) - before).max(axis=1) > 1e-4).all()


# --- A NumPy reference of the fusion (float64) --------------------------------


def _w(variable):
    return to_np(variable).astype(np.float64)


def _layer_norm(x, layer):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + layer.epsilon) * _w(layer.gamma) + _w(layer.beta)


def _dense(x, layer):
    return x @ _w(layer.kernel) + _w(layer.bias)


def _gelu(x):  # exact (erf) GELU, Keras's default
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _pre_ln_block(x, mask, block):
    attention = block._self_attention_layer
    h = _layer_norm(x, block._self_attention_layer_norm)
    q, k, v = (
        np.einsum("bld,dhk->blhk", h, _w(dense.kernel)) + _w(dense.bias)
        for dense in (attention._query_dense, attention._key_dense, attention._value_dense)
    )
    scores = np.einsum("blhk,bmhk->bhlm", q, k) / math.sqrt(q.shape[-1])
    scores = np.where(mask[:, None, None, :], scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    attended = np.einsum("bhlm,bmhk->blhk", weights, v)
    x = x + np.einsum("blhk,hkd->bld", attended, _w(attention._output_dense.kernel)) + _w(
        attention._output_dense.bias
    )
    h = _layer_norm(x, block._feedforward_layer_norm)
    h = _dense(_gelu(_dense(h, block._feedforward_intermediate_dense)), block._feedforward_output_dense)
    return x + h


def reference_fusion(fusion, image_tokens, text_tokens, padding_mask):
    types = _w(fusion.type_embedding.embeddings)
    image = _dense(image_tokens, fusion.image_projection) + types[1]
    text = _dense(text_tokens, fusion.text_projection) + types[2]
    bos = np.broadcast_to(_w(fusion.bos_token) + types[0], (len(image), 1, fusion.hidden_dim))
    x = np.concatenate([bos, image, text], axis=1)
    x = x + _w(fusion.position_embedding.position_embeddings)[: x.shape[1]]
    mask = np.concatenate([np.ones((len(x), 1 + image.shape[1]), bool), padding_mask.astype(bool)], 1)
    for block in fusion.transformer_layers:
        x = _pre_ln_block(x, mask, block)
    return _dense(_layer_norm(x[:, 0], fusion.final_norm), fusion.answer_head)


def test_fusion_matches_a_numpy_reference_and_round_trips_its_config():
    rng = np.random.default_rng(0)
    image_tokens = rng.normal(size=(3, 5, 24))
    text_tokens = rng.normal(size=(3, 6, 40))
    padding_mask = (np.arange(6)[None] < np.array([[6], [3], [1]])).astype("int32")
    fusion = VQAFusion(num_answers=7, hidden_dim=16, num_heads=4, sequence_length=12, num_layers=2)
    logits = to_np(fusion(image_tokens.astype("float32"), text_tokens.astype("float32"), padding_mask))
    # Push the small initial embeddings up, so they matter in the comparison.
    for variable in (fusion.bos_token, fusion.type_embedding.embeddings,
                     fusion.position_embedding.position_embeddings):
        variable.assign(rng.normal(size=variable.shape).astype("float32"))
    logits = to_np(fusion(image_tokens.astype("float32"), text_tokens.astype("float32"), padding_mask))
    assert logits.shape == (3, 7)
    np.testing.assert_allclose(
        logits, reference_fusion(fusion, image_tokens, text_tokens, padding_mask), atol=1e-4
    )

    config = fusion.get_config()
    restored = VQAFusion.from_config(config)
    assert restored.get_config() == config
    restored(image_tokens.astype("float32"), text_tokens.astype("float32"), padding_mask)
    restored.set_weights(fusion.get_weights())
    np.testing.assert_array_equal(
        to_np(restored(image_tokens.astype("float32"), text_tokens.astype("float32"), padding_mask)),
        logits,
    )
    with pytest.raises(ValueError, match="exceed sequence_length=12"):
        VQAFusion(num_answers=2, hidden_dim=16, num_heads=4, sequence_length=12)(
            np.zeros((1, 8, 4), "float32"), np.zeros((1, 4, 4), "float32")
        )
    with pytest.raises(ValueError, match="hidden_dim=10 must be divisible by num_heads=4"):
        VQAFusion(num_answers=2, hidden_dim=10, num_heads=4, sequence_length=12)


def test_clip_vqa_model_shares_towers_masks_padding_and_saves(qa_preprocessor, splits, tmp_path):
    # A class token on the image tower: the fusion sees it as a 17th image token.
    model = make_clip(qa_preprocessor, image_encoder=dict(TINY["image_encoder"], use_class_token=True))
    vqa_model = build_vqa_model(model, num_answers=5)
    backbone = model.backbone
    assert any(layer is backbone.image_encoder for layer in vqa_model.layers)
    assert any(layer is backbone.text_encoder for layer in vqa_model.layers)
    fusion = vqa_model.get_layer("vqa_fusion")
    assert (fusion.hidden_dim, fusion.num_heads, fusion.num_layers) == (32, 2, 2)
    assert fusion.sequence_length == 1 + 17 + 12

    images, questions, _ = splits[0]
    rows = np.array([1, 4, 7, 10])  # "how many shapes are there?": 8 tokens, 4 padded
    inputs = vqa_inputs(model, images[rows], questions[rows])
    other_questions = vqa_inputs(model, images[rows], questions[rows + 1])  # "where is ...?"
    assert set(inputs) == {"images", "token_ids", "padding_mask"}
    assert logits_of(vqa_model, inputs).shape == (4, 5)
    check_padding_image_and_question(vqa_model, inputs, other_questions, vocabulary_size_of(qa_preprocessor))
    check_save_and_load(vqa_model, inputs, tmp_path)


def snapshot(variables):
    return [to_np(v).copy() for v in variables]


def test_freeze_towers_controls_which_weights_train(qa_preprocessor, splits):
    model = make_clip(qa_preprocessor)
    towers = [model.backbone.image_encoder, model.backbone.text_encoder]
    tower_variables = [v for tower in towers for v in tower.weights]
    # Every tower weight is learnable (the sin-cos table is a constant, not a weight).
    learnable = [v.trainable for v in tower_variables]
    assert learnable and all(learnable)
    images, questions, answers = splits[0]
    inputs = vqa_inputs(model, images[:8], questions[:8])
    labels = encode_answers(answers[:8], answer_vocabulary(answers[:8]))
    for freeze in (True, False):
        vqa_model = build_vqa_model(model, int(labels.max()) + 1, num_layers=1, freeze_towers=freeze)
        fusion = vqa_model.get_layer("vqa_fusion")
        trainable_towers = 0 if freeze else sum(learnable)
        assert len(vqa_model.trainable_weights) == len(fusion.trainable_weights) + trainable_towers
        towers_before, fusion_before = snapshot(tower_variables), snapshot(fusion.weights)
        vqa_model.compile(optimizer=keras.optimizers.AdamW(1e-2),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          # On TF, tracing would cost more than the two steps.
                          run_eagerly=keras.config.backend() == "tensorflow")
        vqa_model.fit(inputs, labels, epochs=2, batch_size=8, verbose=0)
        towers_after, fusion_after = snapshot(tower_variables), snapshot(fusion.weights)
        assert not any(np.array_equal(a, b) for a, b in zip(fusion_before, fusion_after))
        unchanged = [np.array_equal(a, b) for a, b in zip(towers_before, towers_after)]
        if freeze:
            assert all(unchanged)  # bit-identical
        else:
            assert unchanged == [not t for t in learnable]  # every learnable tower weight moved


def test_fine_tuning_memorises_the_training_split_and_scores_the_test_split(qa_preprocessor, splits):
    train, (test_images, test_questions, test_answers, test_types) = splits
    model = make_clip(qa_preprocessor)
    metrics, vqa_model = fine_tune_vqa(
        model, train, (test_images, test_questions, test_answers), epochs=30, batch_size=16,
        learning_rate=2e-3, question_types=test_types, seed=0,
    )
    vocabulary = answer_vocabulary(train[2])
    assert set(metrics) == {"accuracy", "train_accuracy", "majority_baseline", "num_answers",
                            "unseen_answers"} | {f"accuracy/{t}" for t in SYNTHETIC_QUESTION_TYPES}
    # Memorising 48 question-image pairs needs gradients through BOS → head.
    assert metrics["train_accuracy"] >= 0.9
    for key, value in metrics.items():
        if key.startswith("accuracy") or key in ("train_accuracy", "majority_baseline"):
            assert 0.0 <= value <= 1.0, key
    assert metrics["num_answers"] == len(vocabulary)
    assert metrics["unseen_answers"] == int((~np.isin(test_answers, vocabulary)).sum())
    assert vqa_model.answers == vocabulary
    inputs = vqa_inputs(model, test_images, test_questions)
    predicted = np.argmax(logits_of(vqa_model, inputs), axis=1)
    expected = np.mean(predicted == encode_answers(test_answers, vocabulary))
    assert metrics["accuracy"] == pytest.approx(expected)


def test_layer_decay_fine_tunes_the_towers_at_their_scaled_rates(qa_preprocessor, splits):
    from keras_maeclip.training import LayerDecayAdamW, layer_decay_scales

    train, (test_images, test_questions, test_answers, _) = splits
    model = make_clip(qa_preprocessor)
    image_block = model.backbone.image_encoder.transformer_layers[0].weights[0]
    before = keras.ops.convert_to_numpy(image_block).copy()
    _, vqa_model = fine_tune_vqa(model, train, (test_images, test_questions, test_answers),
                                 epochs=1, batch_size=16, layer_decay=0.5, seed=0)
    optimizer = vqa_model.optimizer
    assert isinstance(optimizer, LayerDecayAdamW)
    # Every tower variable at its scale (one block per tower: 0.5, embeddings 0.25).
    assert optimizer.lr_scales == layer_decay_scales(model, 0.5)
    assert optimizer.lr_scales[image_block.path] == 0.5
    assert not np.array_equal(keras.ops.convert_to_numpy(image_block), before)


def test_m3ae_vqa_model_uses_the_shared_encoder_and_mae_is_refused(qa_preprocessor, splits, tmp_path):
    m3ae = M3AE.from_preset("m3ae_tiny", preprocessor=qa_preprocessor, **M3AE_SMALL)
    vqa_model = build_vqa_model(m3ae, num_answers=6, num_layers=1)
    assert any(layer is m3ae.backbone for layer in vqa_model.layers)
    fusion = vqa_model.get_layer("vqa_fusion")
    assert fusion.sequence_length == 1 + 16 + 12 and fusion.num_layers == 1
    images, questions, _ = splits[0]
    rows = np.array([1, 4, 7, 10])
    inputs = vqa_inputs(m3ae, images[rows], questions[rows])
    other_questions = vqa_inputs(m3ae, images[rows], questions[rows - 1])  # "what colour ...?"
    assert logits_of(vqa_model, inputs).shape == (4, 6)
    check_padding_image_and_question(vqa_model, inputs, other_questions, vocabulary_size_of(qa_preprocessor))
    check_save_and_load(vqa_model, inputs, tmp_path)

    build_vqa_model(m3ae, num_answers=6, freeze_towers=True)
    assert not m3ae.backbone.trainable

    with pytest.raises(ValueError, match=r"VQA needs a text tower \(CLIP, MAECLIP, M3AE\); MAE has none"):
        build_vqa_model(MAE.from_preset("mae_tiny", **MAE_SMALL), num_answers=3)


def test_majority_baseline_unseen_answers_and_per_type_accuracy_on_a_constructed_case():
    train = ["red", "red", "blue", "two"]
    test = ["red", "green", "blue", "red", "five"]
    assert answer_vocabulary(train) == ["blue", "red", "two"]
    ids = encode_answers(test, answer_vocabulary(train))
    np.testing.assert_array_equal(ids, [1, -1, 0, 1, -1])
    assert majority_baseline(train, test) == pytest.approx(2 / 5)  # "red" twice out of five
    assert majority_baseline(["b", "a"], ["a", "b", "b"]) == pytest.approx(1 / 3)  # tie: sorted first
    # Predictions: red (right), blue (unseen "green": wrong whatever it is),
    # blue (right), two (wrong), red (unseen "five": wrong).
    logits = np.eye(3)[[1, 0, 0, 2, 1]]
    metrics = vqa_metrics(logits, ids, ["colour", "colour", "colour", "count", "count"])
    assert metrics == {"accuracy": pytest.approx(2 / 5), "unseen_answers": 2,
                       "accuracy/colour": pytest.approx(2 / 3), "accuracy/count": 0.0}


def test_synthetic_vqa_flattens_three_questions_per_image_in_order():
    images, questions, answers, types = synthetic_vqa(3, seed=4, image_size=16, with_types=True)
    assert images.shape == (9, 16, 16, 3) and images.dtype == np.uint8
    for i in range(3):
        example = synthetic.generate_example(i, seed=4, image_size=16)
        for j in range(3):
            np.testing.assert_array_equal(images[3 * i + j], example["image"])
        assert list(questions[3 * i : 3 * i + 3]) == example["questions"]
        assert list(answers[3 * i : 3 * i + 3]) == example["answers"]
    assert list(types[:3]) == ["colour", "count", "position"]
    assert all(q.startswith(prefix) for q, prefix in zip(questions, ["what colour", "how many", "where"] * 3))


def test_clear_errors(qa_preprocessor, splits):
    model = make_clip(qa_preprocessor)
    images, questions, answers = splits[0]
    with pytest.raises(ValueError, match="3 images but 2 questions"):
        vqa_inputs(model, images[:3], questions[:2])
    model.preprocessor = None
    with pytest.raises(ValueError, match="vqa_inputs needs model.preprocessor"):
        vqa_inputs(model, images[:3], questions[:3])
    with pytest.raises(ValueError, match=r"train must be an \(images, questions, answers\) tuple"):
        fine_tune_vqa(model, (images, questions), (images, questions, answers))
    with pytest.raises(ValueError, match="test has 48 images, 48 questions and 2 answers"):
        fine_tune_vqa(model, (images, questions, answers), (images, questions, answers[:2]))
    with pytest.raises(ValueError, match="answers is empty"):
        answer_vocabulary([])
