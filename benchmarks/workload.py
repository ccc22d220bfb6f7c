"""The fixed input batch every training-step benchmark times (NumPy only, no Keras)."""


def make_batch(batch_size, image_size, sequence_length, vocabulary_size, seed):
    """A fixed, seeded, preprocessed CLIP batch (NumPy): `images`, `token_ids`, `padding_mask`.

    Images uniform in [-1, 1]; captions of random length in
    `[sequence_length // 4, sequence_length]` with random ids in
    `[1, vocabulary_size)`, zero-padded.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    images = rng.uniform(-1.0, 1.0, (batch_size, image_size, image_size, 3)).astype("float32")
    lengths = rng.integers(sequence_length // 4, sequence_length + 1, batch_size)
    padding_mask = (np.arange(sequence_length)[None, :] < lengths[:, None]).astype("int32")
    token_ids = rng.integers(1, vocabulary_size, (batch_size, sequence_length)).astype("int32")
    token_ids = token_ids * padding_mask
    return {"images": images, "token_ids": token_ids, "padding_mask": padding_mask}
