"""CSV / TSV manifests as users write them: quotes, long captions, stray separators, foreign paths.

Every row of a manifest ends as one record (good, or bad with its reason)
and nothing outside the manifest's folder is read unless allowed.
"""

import io
import os

import numpy as np
import pytest
from PIL import Image

from keras_maeclip.data import decoding, readers


def _png():
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def folder(tmp_path):
    for name in ("a.png", "b.png", "c.png", "d.png"):
        (tmp_path / name).write_bytes(_png())
    return tmp_path


def _read(path, **kwargs):
    return list(readers.read_csv(str(path), **kwargs).as_numpy_iterator())


def test_tsv_reads_quotes_as_text_and_never_swallows_rows(folder):
    (folder / "m.tsv").write_text(
        'filepath\ttitle\n'
        'a.png\ta 12" vinyl record\n'  # unbalanced quote: with csv quoting it ate the next rows
        'b.png\t"quoted" words and a "pair"\n'
        'c.png\tthe end\n'
    )
    out = _read(folder / "m.tsv")
    assert [r["caption"] for r in out] == [b'a 12" vinyl record', b'"quoted" words and a "pair"', b"the end"]
    assert [r["error"] for r in out] == [b""] * 3
    # quoting="standard" reads TSV cells the CSV way when asked.
    (folder / "q.tsv").write_text('filepath\ttitle\na.png\t"tab\tinside"\n')
    assert [r["caption"] for r in _read(folder / "q.tsv", quoting="standard")] == [b"tab\tinside"]


def test_csv_unbalanced_quote_spoils_only_its_own_row(folder):
    (folder / "m.csv").write_text(
        "filepath,title\n"
        'a.png,"a ""quoted"" word, and a comma"\n'
        'b.png,"never closed\n'
        "c.png,a plain row\n"
        'd.png,"x" y\n'  # text after a closing quote
        "a.png,an 8\" ruler\n"  # a quote inside an unquoted cell is text
    )
    with pytest.warns(UserWarning, match=r"2 row\(s\).*line 3"):
        out = _read(folder / "m.csv", separator=",")
    assert [(r["key"], r["error"]) for r in out] == [
        (b"a.png", b""), (b"m.csv:3", b"malformed_row"), (b"c.png", b""), (b"m.csv:5", b"malformed_row"),
        (b"a.png", b""),
    ]
    assert out[0]["caption"] == b'a "quoted" word, and a comma' and out[4]["caption"] == b'an 8" ruler'
    # Unquoted, the same file keeps every character.
    out = _read(folder / "m.csv", separator=",", quoting="none")
    assert [r["error"] for r in out] == [b""] * 5
    assert [r["caption"] for r in out] == [
        b'"a ""quoted"" word, and a comma"', b'"never closed', b"a plain row", b'"x" y', b'an 8" ruler',
    ]


def test_caption_over_the_csv_field_limit_does_not_abort_the_manifest(folder):
    long = "x" * 200_000  # Python's csv refuses cells over 131072 characters
    (folder / "m.tsv").write_text(f"filepath\ttitle\na.png\t{long}\nb.png\tshort\n")
    out = _read(folder / "m.tsv")
    assert [len(r["caption"]) for r in out] == [200_000, 5]
    (folder / "m.csv").write_text(f'filepath,title\na.png,{long}\nb.png,"{long}"\nc.png,short\n')
    with pytest.warns(UserWarning, match="field"):
        out = _read(folder / "m.csv", separator=",")
    assert [r["error"] for r in out] == [b"", b"malformed_row", b""]
    assert len(out[0]["caption"]) == 200_000


def test_extra_cells_are_counted_or_given_back_to_a_last_column_caption(folder):
    (folder / "m.tsv").write_text("filepath\ttitle\tkey\na.png\tleft\tright\tk1\nb.png\tfine\tk2\t\nc.png\tok\tk3\n")
    with pytest.warns(UserWarning, match="4 cells"):
        raw = readers.read_csv(str(folder / "m.tsv"), key_column="key")
    counter = decoding.SkipCounter()
    out = list(decoding.decode_records(raw, counter).as_numpy_iterator())
    assert [r["caption"] for r in out] == [b"fine", b"ok"]  # a trailing empty cell is tolerated
    assert {k: v for k, v in counter.counts().items() if v} == {"extra_columns": 1}
    # Caption last (open_clip's usual layout): unquoted commas stay in the caption, not cut off at the first.
    (folder / "m.csv").write_text("filepath,title\na.png,a red square, a blue circle, and a cross\n")
    (r,) = _read(folder / "m.csv", separator=",")
    assert r["caption"] == b"a red square, a blue circle, and a cross" and r["error"] == b""


def test_paths_outside_the_manifest_folder_are_refused_unless_allowed(tmp_path):
    inner = tmp_path / "data"
    inner.mkdir()
    (inner / "a.png").write_bytes(_png())
    (tmp_path / "secret.png").write_bytes(_png())
    (inner / "m.tsv").write_text(
        f"filepath\ttitle\na.png\tfine\n../secret.png\tup\n{tmp_path / 'secret.png'}\tabsolute\n"
        "sub/../a.png\tstays inside\n"
    )
    with pytest.raises(ValueError, match=r"2 image path\(s\) outside.*line 3: '../secret.png'.*allow_outside_paths"):
        readers.read_csv(str(inner / "m.tsv"))
    out = _read(inner / "m.tsv", allow_outside_paths=True)
    assert [r["error"] for r in out] == [b""] * 4
    assert out[1]["image"] == _png()
    (inner / "etc.tsv").write_text("filepath\ttitle\n/etc/hostname\tx\n")
    with pytest.raises(ValueError, match="/etc/hostname"):
        readers.read_csv(str(inner / "etc.tsv"))
    assert os.path.exists(inner / "a.png")


def test_bad_quoting_option_is_refused(folder):
    (folder / "m.tsv").write_text("filepath\ttitle\na.png\tx\n")
    with pytest.raises(ValueError, match="quoting"):
        readers.read_csv(str(folder / "m.tsv"), quoting="minimal")
