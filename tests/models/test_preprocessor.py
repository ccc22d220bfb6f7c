import numpy as np
import pytest
import tensorflow as tf

from keras_maeclip.models import SPECIAL_TOKENS, caption_tokenizer, learn_vocabulary
from keras_maeclip.models.preprocessor import IMAGENET_MEAN, IMAGENET_STD
from tests.tiny import raw_batch


def np_(x):
    return np.asarray(x)


def test_outputs_ids_mask_and_normalised_images(preprocessor):
    tok = preprocessor.tokenizer
    out = preprocessor({"images": np.full((2, 32, 32, 3), 255, "uint8"), "captions": ["a red circle", "a blue square at the top"]})
    assert set(out) == {"images", "token_ids", "padding_mask"}
    images, ids, mask = np_(out["images"]), np_(out["token_ids"]), np_(out["padding_mask"])
    assert images.shape == (2, 16, 16, 3) and ids.shape == (2, 12) and mask.shape == (2, 12)
    expected = (1.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(images[0, 3, 5], expected, rtol=1e-4)
    cls, sep, pad = (tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]"))
    n = int(mask[0].sum())  # [CLS] + word pieces + [SEP]
    assert ids[0, 0] == cls and ids[0, n - 1] == sep and (ids[0, n:] == pad).all()
    text = np.asarray(tok.detokenize(ids[0, 1 : n - 1])).item()
    assert (text.decode() if isinstance(text, bytes) else text) == "a red circle"
    np.testing.assert_array_equal(mask[0], [1] * n + [0] * (12 - n))


def test_long_captions_are_truncated(preprocessor):
    out = preprocessor({"captions": ["a red circle " * 20]})
    ids = np_(out["token_ids"])[0]
    assert ids.shape == (12,) and np_(out["padding_mask"]).sum() == 12
    assert ids[-1] == preprocessor.tokenizer.token_to_id("[SEP]")


def test_works_inside_tf_data_map(preprocessor):
    data = tf.data.Dataset.from_tensor_slices(raw_batch(6, size=24)).batch(3).map(preprocessor)
    batches = list(data.as_numpy_iterator())
    assert len(batches) == 2
    assert batches[0]["images"].shape == (3, 16, 16, 3)
    assert batches[0]["token_ids"].dtype == np.int32


def test_vocabulary_has_special_tokens_first():
    vocab = learn_vocabulary(["a red circle", "two blue squares"] * 50, 100)
    assert tuple(vocab[: len(SPECIAL_TOKENS)]) == SPECIAL_TOKENS
    assert "circle" in vocab


def test_bad_inputs_raise_clear_errors(preprocessor):
    with pytest.raises(ValueError, match="captions is empty"):
        preprocessor({"captions": np.array([], dtype=str)})
    with pytest.raises(ValueError, match="caption list is empty"):
        learn_vocabulary([], 100)
    with pytest.raises(ValueError, match=r"RGB; got shape \(2, 8, 8, 4\)"):
        preprocessor({"images": np.zeros((2, 8, 8, 4), "uint8")})
    with pytest.raises(ValueError, match=r"got shape \(8, 8\)"):
        preprocessor({"images": np.zeros((8, 8), "uint8")})
    with pytest.raises(ValueError, match="expects a dict with 'images' and/or 'captions'"):
        preprocessor({"text": ["a"]})
    with pytest.raises(ValueError, match="already preprocessed"):
        preprocessor({"token_ids": np.zeros((1, 4), "int32"), "images": np.zeros((1, 8, 8, 3))})
    with pytest.raises(ValueError, match="lacks the special tokens"):
        caption_tokenizer(["a", "b", "[PAD]"])
