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


def run_and_report(run, prefix, **identity):
    """A worker's end: `run()`'s result dict, or its error, as one `prefix` + JSON line.

    The parent reads that line from the worker's stdout. `identity`
    (e.g. `backend=`, `model=`) goes into the failure row so that the
    parent can place it. Returns the process exit code: 0 if `run`
    succeeded, else 1 (the traceback goes to stderr).
    """
    import json
    import sys
    import traceback

    try:
        result = run()
        result["ok"] = True
    except Exception as e:  # noqa: BLE001 - reported to the parent.
        traceback.print_exc()
        result = {**identity, "ok": False, "error": f"{type(e).__name__}: {e}"}
    sys.stdout.write(prefix + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0 if result["ok"] else 1
