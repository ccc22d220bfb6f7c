"""`fit` reads each on-disk format through the readers and the robust decoder."""

import csv
import io
import tarfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_maeclip.data import decoding, readers, synthetic
from tests.tiny import make_clip

N, SIZE = 8, 16


def _png(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_formats(root):
    """The same 8 scenes as TFRecords, a CSV manifest and a WebDataset tar; in
    each, scene 2's image is cut in half and scene 5's caption is blank."""
    examples = [synthetic.generate_example(i, image_size=SIZE) for i in range(N)]
    images = {ex["key"]: _png(ex["image"]) for ex in examples}
    captions = {ex["key"]: ex["caption"].encode() for ex in examples}
    bad_image, blank_caption = examples[2]["key"], examples[5]["key"]
    images[bad_image] = images[bad_image][: len(images[bad_image]) // 2]
    captions[blank_caption] = b"   "
    keys = [ex["key"] for ex in examples]

    records = tf.data.Dataset.from_tensor_slices(
        {"image": [images[k] for k in keys], "caption": [captions[k] for k in keys],
         "key": keys, "error": [b""] * N}
    )
    tfrecords, _ = readers.write_tfrecords(records, root / "tfr", examples_per_shard=4)

    (root / "csv").mkdir()
    manifest = root / "csv" / "manifest.csv"
    with open(manifest, "w", newline="") as f:  # quoted: the captions hold commas
        writer = csv.writer(f)
        writer.writerow(["filepath", "title"])
        for k in keys:
            (root / "csv" / f"{k}.png").write_bytes(images[k])
            writer.writerow([f"{k}.png", captions[k].decode()])

    tar_path = root / "shard-000.tar"
    with tarfile.open(tar_path, "w") as tar:
        for k in keys:
            for name, data in ((f"{k}.png", images[k]), (f"{k}.txt", captions[k])):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return {
        "tfrecord": lambda: readers.read_tfrecords(tfrecords),
        "csv": lambda: readers.read_csv(str(manifest), separator=","),
        "webdataset": lambda: readers.read_webdataset([str(tar_path)]),
    }


@pytest.mark.parametrize("fmt", ["tfrecord", "csv", "webdataset"])
def test_fit_reads_each_format_and_reports_the_skips(preprocessor, tmp_path, fmt, capsys):
    counter = decoding.SkipCounter()
    records = _write_formats(tmp_path)[fmt]()
    data = (
        decoding.decode_records(records, counter)
        .map(lambda r: {"images": tf.image.resize(r["image"], (SIZE, SIZE)), "captions": r["caption"]})
        .batch(3)
    )
    model = make_clip(preprocessor)
    model.compile(learning_rate=1e-3, warmup_steps=1, total_steps=4)
    report = decoding.SkipReport(counter)
    history = model.fit(data, epochs=1, verbose=0, callbacks=[report])
    assert np.isfinite(history.history["loss"][0])
    counts = {k: v for k, v in counter.counts().items() if v}
    assert counts == {"corrupt_image": 1, "empty_caption": 1}
    assert counter.good == N - 2
    assert "skipped 2 of 8 records" in capsys.readouterr().out
