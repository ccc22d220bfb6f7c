"""`convert` writes only what training would use, never mixes two shard sets, never reads outside the manifest."""

import io
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from absl import app
from PIL import Image

from keras_maeclip.data import convert, readers


def _png(value=0):
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _count(paths):
    return sum(1 for p in paths for _ in tf.data.TFRecordDataset(p))


def test_records_training_would_skip_are_not_written_and_are_reported(tmp_path, capsys):
    (tmp_path / "good.png").write_bytes(_png())
    (tmp_path / "page.jpg").write_bytes(b"<html>404</html>")
    (tmp_path / "cut.png").write_bytes(_png()[:30])
    (tmp_path / "m.tsv").write_bytes(
        b"filepath\ttitle\n"
        b"good.png\ta photo\n"
        b"good.png\tcaf\xff bad bytes\n"
        b"good.png\t   \n"
        b"page.jpg\tan error page\n"
        b"cut.png\ta truncated file\n"
    )
    result = convert.run(["convert", "--input_format=csv", f"--input={tmp_path / 'm.tsv'}",
                          f"--output_dir={tmp_path / 'out'}"])
    assert result["written"] == 1 and _count(result["paths"]) == 1
    assert result["skipped"] == {"caption_not_utf8": 1, "empty_caption": 1, "unknown_format": 1, "corrupt_image": 1}
    assert result["examples"]["unknown_format"] == "page.jpg"
    assert "unknown_format=1 (e.g. 'page.jpg')" in capsys.readouterr().out
    unchecked = convert.run(["convert", "--input_format=csv", f"--input={tmp_path / 'm.tsv'}",
                             f"--output_dir={tmp_path / 'raw'}", "--nocheck_records"])
    assert unchecked["written"] == 5


def test_a_folder_with_shards_of_another_count_is_refused_or_replaced(tmp_path):
    out = tmp_path / "out"
    flags = ["convert", "--input_format=synthetic", "--num_examples=6", "--image_size=16", f"--output_dir={out}"]
    first = convert.run(flags + ["--examples_per_shard=2"])
    assert len(first["paths"]) == 3
    (out / "other-00000-of-00001.tfrecord").write_bytes(b"")  # another prefix is left alone
    with pytest.raises(app.UsageError, match=r"already holds 3 shard\(s\) named shard-\*-of-00003.*--overwrite"):
        convert.run(flags + ["--examples_per_shard=4"])
    assert sorted(os.listdir(out))[1:] == [os.path.basename(p) for p in first["paths"]]
    second = convert.run(flags + ["--examples_per_shard=4", "--overwrite"])
    assert sorted(os.listdir(out)) == ["other-00000-of-00001.tfrecord"] + [os.path.basename(p) for p in second["paths"]]
    assert _count(readers._list_files(str(out / "shard-*"), (".tfrecord",), "test")) == 6  # not 12


def test_temporary_names_are_unique_and_cleaned_up(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "shard-00000.tfrecord.tmp").write_bytes(b"someone else's file")  # the old fixed temporary name
    seen = []

    def records():
        for i in range(3):
            yield {"image": _png(i), "caption": b"c", "key": f"k{i}".encode()}
            seen.extend(os.listdir(out))
        raise OSError("the source broke")

    with pytest.raises(OSError, match="source broke"):
        readers.write_tfrecords(records(), out, examples_per_shard=2)
    temporaries = {name for name in seen if ".tmp-" in name}
    assert temporaries and all(re.fullmatch(r"\.shard-0000\d\.tfrecord\.tmp-\d+-[0-9a-f]{12}", n) for n in temporaries)
    assert os.listdir(out) == ["shard-00000.tfrecord.tmp"]  # ours removed, theirs untouched
    assert (out / "shard-00000.tfrecord.tmp").read_bytes() == b"someone else's file"


def test_convert_refuses_manifest_paths_outside_its_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "private.png").write_bytes(_png())
    (tmp_path / "data" / "m.tsv").write_text("filepath\ttitle\n../private.png\ta photo\n")
    flags = ["convert", "--input_format=csv", f"--input={tmp_path / 'data' / 'm.tsv'}",
             f"--output_dir={tmp_path / 'out'}"]
    with pytest.raises(ValueError, match=r"1 image path\(s\) outside.*--allow_outside_paths"):
        convert.run(flags)
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")
    assert convert.run(flags + ["--allow_outside_paths"])["written"] == 1
