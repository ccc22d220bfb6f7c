"""Input-pipeline throughput: read + decode + augment + tokenize + batch.

What it measures
----------------
Images per second that the library's tf.data pipeline delivers, from JPEG
files on local disk to model-ready batches, on this machine's CPUs:

    reader (TFRecord shards or WebDataset tars)
      -> decoding.decode_records    (PIL decode, checks, skip counting)
      -> augment.augment_records    (random resized crop, scale 0.5-1)
      -> batch(batch_size)
      -> ImageTextPreprocessor           (normalise + WordPiece-tokenize captions)
      -> prefetch

at each image size in `--sizes`. The fixture is `--examples` synthetic
scenes drawn at that size, JPEG-encoded (quality 90) and written as 4
TFRecord shards and 4 tar shards in a temporary folder. The pipeline is
iterated `--epochs` times (`repeat=False`); the first pass is warm-up
(tracing, file cache), the figure is the median of the other passes.

It then compares the rate with what the bench-small training step
consumes (`--step_samples_per_second`, default 23.8: the fastest backend in
docs/benchmarks.md, eager PyTorch at 128²; open_clip trains the same
workload at about 28). The goal is a pipeline at least 3x the step. Note
that here the pipeline has both cores to itself; during training it shares
them with the step.

    python benchmarks/input_pipeline.py                  # 128² and 224², both formats
    python benchmarks/input_pipeline.py --sizes=128 --examples=256 --epochs=2   # quick
"""

import os
import statistics
import sys
import tempfile
import time

from absl import app, flags

from machine import machine_facts  # benchmarks/machine.py: this script's folder is on sys.path

FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["128", "224"], "Image sizes to measure.")
flags.DEFINE_list("formats", ["tfrecord", "webdataset"], "On-disk formats to read.")
flags.DEFINE_integer("examples", 1024, "Images in each fixture.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("epochs", 4, "Passes over the fixture; the first is warm-up.")
flags.DEFINE_integer("sequence_length", 32, "Caption tokens (bench-small's).")
flags.DEFINE_float("step_samples_per_second", 23.8, "Training-step consumption to compare with (bench-small).")
flags.DEFINE_string("workdir", None, "Where to write the fixtures (default: a temporary folder).")


def _fixture(root, size, n):
    """n synthetic scenes at `size`, JPEG, as TFRecord shards and tar shards."""
    import io
    import tarfile

    import tensorflow as tf
    from PIL import Image

    from keras_maeclip.data import readers, synthetic

    images, captions, keys = [], [], []
    for i in range(n):
        ex = synthetic.generate_example(i, seed=0, image_size=size)
        buffer = io.BytesIO()
        Image.fromarray(ex["image"]).save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
        captions.append(ex["caption"].encode())
        keys.append(ex["key"].encode())
    records = tf.data.Dataset.from_tensor_slices(
        {"image": images, "caption": captions, "key": keys, "error": [b""] * n}
    )
    per_shard = -(-n // 4)
    tfrecords, _ = readers.write_tfrecords(records, os.path.join(root, "tfr"), examples_per_shard=per_shard)
    tars = []
    os.makedirs(os.path.join(root, "wds"), exist_ok=True)
    for s in range(4):
        path = os.path.join(root, "wds", f"shard-{s:05d}.tar")
        with tarfile.open(path, "w") as tar:
            for i in range(s * per_shard, min(n, (s + 1) * per_shard)):
                for suffix, data in ((".jpg", images[i]), (".txt", captions[i])):
                    info = tarfile.TarInfo(keys[i].decode() + suffix)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        tars.append(path)
    megabytes = sum(len(b) for b in images) / 2**20
    return {"tfrecord": tfrecords, "webdataset": tars}, [c.decode() for c in captions], megabytes


def _pipeline(fmt, files, size, preprocessor, counter):
    import tensorflow as tf

    from keras_maeclip.data import augment, decoding, readers

    read = readers.read_tfrecords if fmt == "tfrecord" else readers.read_webdataset
    records = read(files, deterministic=False)
    data = decoding.decode_records(records, counter)
    data = augment.augment_records(data, size, training=True, scale=augment.CLIP_CROP_SCALE)
    data = data.map(lambda r: {"images": r["image"], "captions": r["caption"]})
    data = data.batch(FLAGS.batch_size)
    data = data.map(lambda b: preprocessor(b), num_parallel_calls=tf.data.AUTOTUNE)
    return data.prefetch(tf.data.AUTOTUNE)


def _measure(data, n):
    """Seconds per pass, first pass (warm-up) included as element 0."""
    times = []
    for _ in range(FLAGS.epochs):
        seen, start = 0, time.perf_counter()
        for batch in data:
            seen += int(batch["images"].shape[0])
        times.append(time.perf_counter() - start)
        if seen != n:
            raise RuntimeError(f"a pass yielded {seen} images, expected {n}")
    return times


def main(argv):
    del argv
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_maeclip.data import decoding
    from keras_maeclip.models import ImageTextPreprocessor, caption_tokenizer, image_converter, learn_vocabulary

    facts = machine_facts()
    print(f"machine: {facts['cpu_model']}, {facts['cpu_count']} CPUs, {facts['mem_total_gib']} GiB; {facts['platform']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items()))
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    print(
        f"pipeline: read -> decode (PIL) -> random resized crop -> batch {FLAGS.batch_size} -> "
        f"normalise + tokenize ({FLAGS.sequence_length} tokens) -> prefetch; "
        f"{FLAGS.examples} JPEG images per fixture; median of {FLAGS.epochs - 1} passes after 1 warm-up"
    )
    rows = []
    workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="input_pipeline_")
    for size in (int(s) for s in FLAGS.sizes):
        files, captions, megabytes = _fixture(os.path.join(workdir, str(size)), size, FLAGS.examples)
        preprocessor = ImageTextPreprocessor(
            caption_tokenizer(learn_vocabulary(captions, 1000)),
            image_converter(size),
            sequence_length=FLAGS.sequence_length,
        )
        for fmt in FLAGS.formats:
            counter = decoding.SkipCounter()
            times = _measure(_pipeline(fmt, files[fmt], size, preprocessor, counter), FLAGS.examples)
            rate = FLAGS.examples / statistics.median(times[1:])
            rows.append((fmt, size, megabytes, times[0], rate, counter.skipped))
            print(f"  {fmt} {size}²: {rate:.0f} images/s", flush=True)
    step = FLAGS.step_samples_per_second
    print()
    print(f"| format | size | fixture MiB | warm-up pass s | images/s | x step ({step:g}/s) | skipped |")
    print("|---|---|---|---|---|---|---|")
    for fmt, size, megabytes, warm, rate, skipped in rows:
        print(f"| {fmt} | {size}² | {megabytes:.1f} | {warm:.1f} | {rate:.0f} | {rate / step:.1f} | {skipped} |")
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
