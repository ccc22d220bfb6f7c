"""Tests for keras_maeclip.data.readers and the convert CLI (independent of the Keras backend).

One fixture holds the same 12 synthetic examples in three formats: TFRecord
shards from `synthetic.write_tfrecords` (3 files), a TSV manifest with PNG
files (1 manifest), and WebDataset tars (3 shards of 4 samples). Pixels are
checked against `generate_example` decoded with PIL, independently of TF.
"""

import io
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_maeclip.data import convert, readers, synthetic

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N, SIZE, SHARDS = 12, 16, 3


def png_bytes(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def pixels_of(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def add_member(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            add_member(tar, name, data)
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("readers")
    examples = [synthetic.generate_example(i, image_size=SIZE) for i in range(N)]
    reference = {ex["key"]: (ex["caption"].encode(), ex["image"]) for ex in examples}
    files = {ex["key"]: png_bytes(ex["image"]) for ex in examples}
    tfrecords = synthetic.write_tfrecords(root / "tfr", N, num_shards=SHARDS, image_size=SIZE)

    (root / "csv" / "images").mkdir(parents=True)
    lines = ["filepath\ttitle\tkey"]
    for ex in examples:
        (root / "csv" / "images" / f"{ex['key']}.png").write_bytes(files[ex["key"]])
        lines.append(f"images/{ex['key']}.png\t{ex['caption']}\t{ex['key']}")
    manifest = root / "csv" / "manifest.tsv"
    manifest.write_text("\n".join(lines) + "\n")

    (root / "wds").mkdir()
    tars = []
    per = N // SHARDS
    for s in range(SHARDS):
        members = []
        for i, ex in enumerate(examples[s * per:(s + 1) * per]):
            members.append((f"{ex['key']}.png", files[ex["key"]]))
            if i % 2:  # half the captions in .json, the WebDataset alternative
                members.append((f"{ex['key']}.json", f'{{"caption": "{ex["caption"]}"}}'.encode()))
            else:
                members.append((f"{ex['key']}.txt", ex["caption"].encode()))
        tars.append(write_tar(root / "wds" / f"part-{s:03d}.tar", members))
    keys = [ex["key"] for ex in examples]
    return {
        "root": root,
        "reference": reference,
        "files": files,
        "keys": keys,
        "tfrecord": tfrecords,
        "csv": str(manifest),
        "webdataset": tars,
        # keys of each file, in file order (the CSV is one file)
        "file_keys": {
            "tfrecord": [keys[s * per:(s + 1) * per] for s in range(SHARDS)],
            "csv": [keys],
            "webdataset": [keys[s * per:(s + 1) * per] for s in range(SHARDS)],
        },
    }


def read(data, fmt, files=None, **options):
    files = data[fmt] if files is None else files
    if fmt == "tfrecord":
        return readers.read_tfrecords(files, **options)
    if fmt == "csv":
        return readers.read_csv(files, key_column="key", **options)
    return readers.read_webdataset(files, **options)


def round_robin(groups):
    """The default read order: one record of each file in turn (all files open at once)."""
    order, groups = [], [list(g) for g in groups]
    while any(groups):
        order += [g.pop(0) for g in groups if g]
    return order


def records(dataset):
    return list(dataset.as_numpy_iterator())


def keys_of(dataset):
    return [r["key"].decode() for r in dataset.as_numpy_iterator()]


FORMATS = ("tfrecord", "csv", "webdataset")


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_yields_the_reference_examples(data, fmt):
    out = records(read(data, fmt))
    assert sorted(r["key"].decode() for r in out) == sorted(data["keys"])
    for r in out:
        assert set(r) == {"image", "caption", "key", "error"}
        key = r["key"].decode()
        caption, pixels = data["reference"][key]
        assert r["error"] == b""
        assert r["caption"] == caption
        np.testing.assert_array_equal(pixels_of(r["image"]), pixels)  # PNG is lossless: exact
        if fmt != "tfrecord":  # the very bytes of the PNG file / tar member
            assert r["image"] == data["files"][key]
    # With defaults (deterministic, no shuffling) files interleave one record at a time.
    expected = round_robin(data["file_keys"][fmt])
    assert [r["key"].decode() for r in out] == expected


def test_directory_glob_and_list_name_the_same_files(data):
    root = data["root"]
    by_dir = keys_of(readers.read_tfrecords(str(root / "tfr")))
    by_glob = keys_of(readers.read_tfrecords(str(root / "tfr" / "*.tfrecord")))
    by_list = keys_of(readers.read_tfrecords(list(reversed(data["tfrecord"]))))  # list order is kept
    assert by_dir == by_glob
    assert sorted(by_list) == sorted(by_dir) and by_list != by_dir
    assert keys_of(readers.read_webdataset(str(root / "wds"))) == keys_of(readers.read_webdataset(data["webdataset"]))


def test_csv_key_defaults_to_the_path_relative_to_the_manifest(data):
    out = records(readers.read_csv(data["csv"], extra_keys=("title",)))
    assert [r["key"].decode() for r in out] == [f"images/{k}.png" for k in data["keys"]]
    assert [r["title"] for r in out] == [data["reference"][k][0] for k in data["keys"]]
    with pytest.raises(ValueError, match="extra_keys"):
        readers.read_csv(data["csv"], extra_keys=("key",))


@pytest.mark.parametrize("fmt", FORMATS)
def test_deterministic_mode_gives_the_same_shuffled_order_twice(data, fmt):
    options = dict(shuffle_files=True, shuffle_buffer=5, seed=7, deterministic=True)
    first, second = keys_of(read(data, fmt, **options)), keys_of(read(data, fmt, **options))
    assert first == second
    assert sorted(first) == sorted(data["keys"])
    assert first != keys_of(read(data, fmt))  # it did shuffle
    assert keys_of(read(data, fmt, **dict(options, seed=8))) != first
    with pytest.warns(UserWarning, match="seed"):
        unseeded = read(data, fmt, shuffle_files=True, shuffle_buffer=5)
    assert keys_of(unseeded) == keys_of(read(data, fmt))  # no seed: no shuffle
    repeated = keys_of(read(data, fmt, repeat=True, **options).take(2 * N))
    assert sorted(repeated) == sorted(data["keys"] * 2)
    assert repeated[:N] == first


# (format, indices of the files used, workers, options): by file when there are
# at least as many files as workers, else by record.
SHARDING = [
    ("tfrecord", [0, 1, 2], 2, {}),
    ("tfrecord", [0, 1, 2], 3, {}),
    ("tfrecord", [0, 1], 3, {}),
    ("csv", [0], 2, {}),
    ("csv", [0], 3, {}),
    ("webdataset", [0, 1, 2], 2, {}),
    ("webdataset", [0, 1, 2], 3, {}),
    ("webdataset", [0, 1], 3, {}),
    ("webdataset", [0, 1, 2], 2, dict(shuffle_files=True, shuffle_buffer=4, seed=1, deterministic=False)),
    ("tfrecord", [0, 1], 3, dict(shuffle_files=True, shuffle_buffer=4, seed=1, deterministic=False)),
    ("csv", [0], 2, dict(shuffle_buffer=4, seed=3, deterministic=False)),
]


@pytest.mark.parametrize("fmt, used, k, options", SHARDING)
def test_workers_partition_the_records_exactly(data, fmt, used, k, options):
    files = [data[fmt][i] for i in used] if fmt != "csv" else data["csv"]
    groups = [data["file_keys"][fmt][i] for i in used]
    expected = sorted(key for group in groups for key in group)
    parts = [keys_of(read(data, fmt, files, num_workers=k, worker_index=i, **options)) for i in range(k)]
    assert sorted(key for part in parts for key in part) == expected  # nothing lost or repeated
    for i in range(k):
        for j in range(i + 1, k):
            assert not set(parts[i]) & set(parts[j])
    if len(used) >= k:  # by file: worker i holds exactly files i, i + k, ...
        for i in range(k):
            assert sorted(parts[i]) == sorted(key for g in groups[i::k] for key in g)
    else:  # by record: near-equal shares
        total = len(expected)
        assert sorted(len(p) for p in parts) == sorted(total // k + (i < total % k) for i in range(k))


def test_record_sharding_refuses_an_unseeded_file_shuffle(data):
    with pytest.raises(ValueError, match="seed"):
        readers.read_tfrecords(data["tfrecord"][:2], shuffle_files=True, deterministic=False, num_workers=3)


def test_bad_options_are_refused_by_name(data):
    with pytest.raises(ValueError, match="worker_index"):
        readers.read_tfrecords(data["tfrecord"], num_workers=2, worker_index=2)
    with pytest.raises(ValueError, match="unknown options.*shuffle"):
        readers.read_csv(data["csv"], shufle=True)
    with pytest.raises(ValueError, match="does not exist"):
        readers.read_webdataset(str(data["root"] / "nope.tar"))
    with pytest.raises(ValueError, match="separator"):
        readers.read_csv(data["csv"], separator="\t\t")


def test_missing_columns_error_lists_the_columns_found(data):
    with pytest.raises(ValueError, match=r"'caption'.*\['filepath', 'title', 'key'\]"):
        readers.read_csv(data["csv"], caption_key="caption")
    with pytest.raises(ValueError, match=r"\['filepath\\ttitle\\tkey'\].*separator"):
        readers.read_csv(data["csv"], separator=",")


def test_bad_csv_rows_are_yielded_with_their_error(data, tmp_path):
    good = data["keys"][0]
    (tmp_path / "ok.png").write_bytes(data["files"][good])
    (tmp_path / "m.csv").write_text(
        "url,caption,note\n"
        "ok.png,a cat,n1\n"
        "gone.png,a dog,n2\n"  # file does not exist
        ",no path,n3\n"  # empty path
        "ok.png\n"  # row too short to hold a caption
        f"{tmp_path / 'ok.png'},,n5\n"  # absolute path, empty caption: not an error here
        "\n"  # blank line: not a record
    )
    out = records(
        readers.read_csv(str(tmp_path / "m.csv"), "url", "caption", ",", extra_keys=("note",))
    )
    assert [r["error"] for r in out] == [b"", b"missing_file", b"missing_file", b"missing_caption", b""]
    assert [r["image"] == data["files"][good] for r in out] == [True, False, False, True, True]
    assert [r["image"] for r in out[1:3]] == [b"", b""]
    assert [r["caption"] for r in out] == [b"a cat", b"a dog", b"no path", b"", b""]
    assert [r["key"] for r in out] == [b"ok.png", b"gone.png", b"", b"ok.png", b"ok.png"]
    assert [r["note"] for r in out] == [b"n1", b"n2", b"n3", b"", b"n5"]


def test_csv_captions_keep_their_raw_bytes(data, tmp_path):
    (tmp_path / "ok.png").write_bytes(data["files"][data["keys"][0]])
    (tmp_path / "m.tsv").write_bytes(b"filepath\ttitle\nok.png\tcaf\xc3\xa9 \xff\xfe bad\n")
    (r,) = records(readers.read_csv(str(tmp_path / "m.tsv")))
    assert r["caption"] == b"caf\xc3\xa9 \xff\xfe bad" and r["error"] == b""


def test_bad_webdataset_samples_are_yielded_with_their_error(data, tmp_path):
    png = data["files"][data["keys"][0]]
    tar = write_tar(tmp_path / "bad.tar", [
        ("a.jpg", png), ("a.txt", b"first"),
        ("b.txt", b"no image"),  # no image member
        ("c.png", png),  # no caption
        ("d.png", png), ("d.json", b'{"title": "x"}'),  # json without a caption
        ("sub/e.seg.png", b"mask"), ("sub/e.webp", png), ("sub/e.txt", b"nested"),
    ])
    out = records(readers.read_webdataset(tar, extra_keys=("seg.png",)))
    assert [r["key"] for r in out] == [b"a", b"b", b"c", b"d", b"sub/e"]
    assert [r["error"] for r in out] == [b"", b"missing_image", b"missing_caption", b"missing_caption", b""]
    assert [r["caption"] for r in out] == [b"first", b"no image", b"", b"", b"nested"]
    assert out[1]["image"] == b"" and out[4]["image"] == png
    assert [r["seg.png"] for r in out] == [b"", b"", b"", b"", b"mask"]


@pytest.mark.parametrize("where", ["in_data", "at_header", "in_header"])
def test_truncated_shard_ends_with_an_unreadable_shard_record(data, tmp_path, where):
    whole = open(data["webdataset"][0], "rb").read()
    with tarfile.open(data["webdataset"][0]) as tar:
        third = tar.getmembers()[2].offset  # header of the second sample's image
    cut = {"in_data": third + 512 + 50, "at_header": third, "in_header": third + 100}[where]
    (tmp_path / "cut.tar").write_bytes(whole[:cut])
    with pytest.warns(UserWarning, match="cannot read"):
        out = records(readers.read_webdataset(str(tmp_path / "cut.tar")))
    # The sample being read when the shard ends is flagged: it may lack members.
    keys = data["file_keys"]["webdataset"][0]
    if where == "in_data":  # inside the second sample's image
        assert [(r["key"].decode(), r["error"]) for r in out] == [(keys[0], b""), (keys[1], b"unreadable_shard")]
    else:  # tarfile stops quietly at a cut header; the missing end-of-archive block tells
        assert [(r["key"].decode(), r["error"]) for r in out] == [(keys[0], b"unreadable_shard")]


def test_tfrecord_without_caption_or_key(data, tmp_path):
    feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"img"]))}
    path = str(tmp_path / "x.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
        writer.write(tf.train.Example().SerializeToString())
    out = records(readers.read_tfrecords(path))
    assert [(r["key"], r["error"], r["image"]) for r in out] == [
        (b"x.tfrecord:0", b"missing_caption", b"img"),
        (b"x.tfrecord:1", b"missing_image", b""),
    ]


def test_writer_round_trip_skips_and_counts_bad_records(data, tmp_path):
    lines = open(data["csv"]).read() + "images/gone.png\tlost\tgone\nimages/also-gone.png\tlost\tgone2\n"
    manifest = data["root"] / "csv" / "with_bad_rows.tsv"
    manifest.write_text(lines)
    source = readers.read_csv(str(manifest), key_column="key", extra_keys=("title",))
    paths, skipped = readers.write_tfrecords(source, tmp_path / "out", examples_per_shard=5, prefix="train")
    assert [os.path.basename(p) for p in paths] == [f"train-{i:05d}-of-00003.tfrecord" for i in range(3)]
    assert skipped == {"missing_file": 2}
    assert sorted(os.listdir(tmp_path / "out")) == sorted(os.path.basename(p) for p in paths)  # no temporaries
    counts = [sum(1 for _ in tf.data.TFRecordDataset(p)) for p in paths]
    assert counts == [5, 5, 2]
    back = records(readers.read_tfrecords(paths, extra_keys=("title",)))
    good = [r for r in records(source) if r["error"] == b""]
    assert sorted(back, key=lambda r: r["key"]) == sorted(good, key=lambda r: r["key"])
    nothing, skipped = readers.write_tfrecords([{"image": b"", "caption": b"", "key": b"k", "error": "x"}], tmp_path / "e")
    assert nothing == [] and skipped == {"x": 1}
    with pytest.raises(ValueError, match="infinite"):
        readers.write_tfrecords(readers.read_tfrecords(paths, repeat=True), tmp_path / "inf")
    with pytest.raises(ValueError, match="'label'"):
        readers.write_tfrecords([{"image": b"i", "caption": b"c", "key": b"k", "label": 3}], tmp_path / "n")


def test_convert_cli_folder_and_synthetic_in_process(data, tmp_path):
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    for i, key in enumerate(data["keys"][:7]):
        where = folder / "sub" if i % 2 else folder
        (where / f"{key}.png").write_bytes(data["files"][key])
        if i != 3:  # one image without a caption file
            (where / f"{key}.txt").write_text(data["reference"][key][0].decode())
    (folder / "notes.md").write_text("ignored")
    result = convert.run(["convert", "--input_format=folder", f"--input={folder}",
                          f"--output_dir={tmp_path / 'f'}", "--examples_per_shard=2"])
    assert result["written"] == 6 and result["skipped"] == {"missing_caption": 1}
    assert len(result["paths"]) == 3 and result["paths"][-1].endswith("shard-00002-of-00003.tfrecord")
    back = records(readers.read_tfrecords(result["paths"]))
    assert {r["key"].decode() for r in back} == {
        os.path.join("sub", f"{k}.png") if i % 2 else f"{k}.png" for i, k in enumerate(data["keys"][:7]) if i != 3
    }
    for r in back:
        key = os.path.basename(r["key"].decode())[: -len(".png")]
        assert r["caption"] == data["reference"][key][0]

    result = convert.run(["convert", "--input_format=synthetic", "--num_examples=7", f"--image_size={SIZE}",
                          f"--output_dir={tmp_path / 's'}", "--examples_per_shard=3", "--prefix=syn"])
    assert [os.path.basename(p) for p in result["paths"]] == [f"syn-{i:05d}-of-00003.tfrecord" for i in range(3)]
    back = records(readers.read_tfrecords(result["paths"]))
    keys = data["keys"]
    assert [r["key"].decode() for r in back] == round_robin([keys[0:3], keys[3:6], keys[6:7]])
    for r in back:
        caption, pixels = data["reference"][r["key"].decode()]
        assert r["caption"] == caption
        np.testing.assert_array_equal(pixels_of(r["image"]), pixels)


def test_convert_cli_as_a_module_subprocess(data, tmp_path):
    out = tmp_path / "wds"
    cmd = [sys.executable, "-m", "keras_maeclip.data.convert", "--input_format=webdataset",
           f"--input={data['root'] / 'wds' / '*.tar'}", f"--output_dir={out}", "--examples_per_shard=5"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(out)) == [f"shard-{i:05d}-of-00003.tfrecord" for i in range(3)]
    assert f"wrote {N} records to 3 shards" in result.stdout
    back = records(readers.read_tfrecords(str(out)))
    assert sorted(r["key"].decode() for r in back) == sorted(data["keys"])
    assert all(r["image"] == data["files"][r["key"].decode()] for r in back)
