"""WebDataset members that no key asks for are never read; oversized ones are skipped and counted."""

import io
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from keras_maeclip.data import decoding, readers

BIG = 2**30  # 1 GiB, stored sparse: no disk space, and reading it would take 1 GiB of memory


def _png():
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _sparse_tar(path, members):
    """A tar of (name, bytes or an int size): an int member's data is a hole in a sparse file."""
    with open(path, "wb") as f:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = data if isinstance(data, int) else len(data)
            f.write(info.tobuf())
            if isinstance(data, int):
                f.seek(data, os.SEEK_CUR)
            else:
                f.write(data)
            f.write(b"\0" * (-info.size % tarfile.BLOCKSIZE))
        f.write(b"\0" * (2 * tarfile.BLOCKSIZE))
    return str(path)


def _bytes_read():
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar"))


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux /proc/self/io to count bytes read")
def test_unrequested_member_is_not_read_and_oversized_members_are_counted(tmp_path):
    png = _png()
    shard = _sparse_tar(tmp_path / "s.tar", [
        ("a.png", png), ("a.txt", b"first"), ("a.npy", BIG),  # a 1 GiB member nobody asked for
        ("b.png", png), ("b.txt", b"x" * 5000),  # a caption over max_member_bytes
        ("c.jpg", BIG), ("c.txt", b"huge image"),  # an image over max_member_bytes
        ("d.png", png), ("d.txt", b"last"),
    ])
    assert os.path.getsize(shard) > 2 * BIG
    before = _bytes_read()
    with pytest.warns(UserWarning, match="'b.txt' has 5000 bytes, more than max_member_bytes=4096"):
        out = list(readers.read_webdataset(shard, max_member_bytes=4096).as_numpy_iterator())
    assert _bytes_read() - before < 50 * 2**20  # the 2 GiB of holes were passed over, not read
    assert [(r["key"], r["error"]) for r in out] == [
        (b"a", b""), (b"b", b"member_too_large"), (b"c", b"member_too_large"), (b"d", b""),
    ]
    assert out[0]["image"] == png and out[0]["caption"] == b"first" and out[2]["image"] == b""
    counter = decoding.SkipCounter()
    raw = readers.read_webdataset(shard, max_member_bytes=4096)
    kept = list(decoding.decode_records(raw, counter, max_skip_fraction=1.0).as_numpy_iterator())
    assert [r["key"] for r in kept] == [b"a", b"d"]
    assert {k: v for k, v in counter.counts().items() if v} == {"member_too_large": 2}


def test_member_cut_short_while_passed_over_is_an_unreadable_shard(tmp_path):
    png = _png()
    shard = _sparse_tar(tmp_path / "s.tar", [("a.png", png), ("a.txt", b"one"), ("a.npy", b"z" * 4000)])
    whole = open(shard, "rb").read()
    (tmp_path / "cut.tar").write_bytes(whole[:len(whole) - 2 * tarfile.BLOCKSIZE - 3000])  # inside a.npy
    with pytest.warns(UserWarning, match="cannot read"):
        out = list(readers.read_webdataset(str(tmp_path / "cut.tar")).as_numpy_iterator())
    assert [(r["key"], r["error"]) for r in out] == [(b"a", b"unreadable_shard")]
    with pytest.raises(ValueError, match="max_member_bytes"):
        readers.read_webdataset(shard, max_member_bytes=0)
