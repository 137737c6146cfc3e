"""Checks of RecBole atomic files (``.inter``, ``.user``, ``.item``, ...) before RecBole reads them.

RecBole's own reader gives no usable error for a malformed file: an unknown header type says
"Type tokn from field user_id is not supported." without the file, a non-number in a float
column fails deep inside pandas without the line, a row with a cell too many is silently cut and
a row with a cell too few is silently filled with the column's mean. :func:`check_atomic_file`
reads the file once (with the same tab separator and quoting that RecBole's pandas reader uses)
and raises :class:`AtomicFileError` naming the file, the line and the field.
"""
import csv

from recbole.utils import FeatureType

TYPES = tuple(t.value for t in FeatureType)


class AtomicFileError(ValueError):
    """A RecBole atomic file that RecBole would misread; the message names file and line."""


def _header(path, line, separator):
    fields = []
    for cell in line:
        name, sep, ftype = cell.partition(":")
        if not sep or not name:
            raise AtomicFileError(f"{path}, line 1: header cell {cell!r} is not 'name:type' "
                                  f"(cells are separated by {separator!r})")
        if ftype not in TYPES:
            raise AtomicFileError(f"{path}, line 1: field {name!r} has unknown type {ftype!r}; "
                                  f"RecBole's types are {', '.join(TYPES)}")
        fields.append((name, ftype))
    return fields


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_atomic_file(path, separator="\t", seq_separator=" ", encoding="utf-8"):
    """Raise :class:`AtomicFileError` unless every row of ``path`` has the header's number of
    cells and every ``float`` / ``float_seq`` cell holds numbers (empty cells are allowed:
    RecBole treats them as missing)."""
    with open(path, "r", encoding=encoding, newline="") as handle:
        rows = csv.reader(handle, delimiter=separator, quotechar='"')
        try:
            header = next(rows)
        except StopIteration:
            raise AtomicFileError(f"{path}, line 1: empty file (a header 'name:type' per column is needed)") from None
        except UnicodeDecodeError as err:
            raise AtomicFileError(f"{path}: not a {encoding} text file ({err.reason})") from None
        fields = _header(path, header, separator)
        floats = [i for i, (_, t) in enumerate(fields) if t == FeatureType.FLOAT.value]
        float_seqs = [i for i, (_, t) in enumerate(fields) if t == FeatureType.FLOAT_SEQ.value]
        width = len(fields)
        try:
            for row in rows:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue                                   # blank lines are skipped by RecBole too
                line = rows.line_num
                if len(row) != width:
                    raise AtomicFileError(f"{path}, line {line}: expected {width} cell(s) "
                                          f"({', '.join(n for n, _ in fields)}), got {len(row)}")
                for i in floats:
                    cell = row[i].strip()
                    if cell and not _is_number(cell):
                        raise AtomicFileError(f"{path}, line {line}: field {fields[i][0]!r} (float) "
                                              f"has the non-number {row[i]!r}")
                for i in float_seqs:
                    for value in row[i].split(seq_separator):
                        if value.strip() and not _is_number(value):
                            raise AtomicFileError(f"{path}, line {line}: field {fields[i][0]!r} (float_seq) "
                                                  f"has the non-number {value!r}")
        except UnicodeDecodeError as err:
            raise AtomicFileError(f"{path}, after line {rows.line_num}: not a {encoding} text file ({err.reason})") from None
        except csv.Error as err:
            raise AtomicFileError(f"{path}, line {rows.line_num}: {err}") from None
