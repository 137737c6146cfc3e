"""The atomic-file check that runs before RecBole's reader (integration cases: test_bad_input.py)."""
import pytest

from recbole_tru.data.atomic import AtomicFileError, check_atomic_file


def write(tmp_path, text, name="d.item"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_well_formed_file_passes_with_quotes_blank_lines_and_empty_cells(tmp_path):
    path = write(tmp_path, 'item_id:token\ttitle:token_seq\tyear:float\tvec:float_seq\n'
                           'i1\t"a\ttabbed title"\t1999\t0.1 2 -3e-2\n'
                           '\n'
                           'i2\tplain\t\t\n')
    check_atomic_file(path)                         # no error


@pytest.mark.parametrize("text, needle", [
    ("item_id:token\tyear:flaot\ni1\t1\n", "line 1: field 'year' has unknown type 'flaot'"),
    ("item_id token\tyear:float\ni1\t1\n", "line 1: header cell 'item_id token' is not 'name:type'"),
    ("item_id:token\tyear:float\ni1\t1\ni2\t1\t3\n", "line 3: expected 2 cell(s) (item_id, year), got 3"),
    ("item_id:token\tyear:float\ni1\n", "line 2: expected 2 cell(s)"),
    ("item_id:token\tyear:float\ni1\tnineteen\n", "line 2: field 'year' (float) has the non-number 'nineteen'"),
    ("item_id:token\tvec:float_seq\ni1\t1 x 2\n", "line 2: field 'vec' (float_seq) has the non-number 'x'"),
    ("", "line 1: empty file"),
])
def test_malformed_file_names_file_line_and_field(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(AtomicFileError) as err:
        check_atomic_file(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_non_utf8_file_is_named(tmp_path):
    path = tmp_path / "d.inter"
    path.write_bytes(b"user_id:token\titem_id:token\n\xff\xfe\t\x81\n")
    with pytest.raises(AtomicFileError, match="not a utf-8 text file"):
        check_atomic_file(path)
