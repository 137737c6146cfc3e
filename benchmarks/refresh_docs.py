"""Copy every marked results table into README.md and docs/*.md again, after a benchmark rerun.

    python benchmarks/refresh_docs.py          # rewrites the blocks in place, prints which changed

A block ``<!-- from: PATH#ANCHOR -->`` ... ``<!-- end -->`` gets the table that
``tests/test_docs.py`` compares it with (``table-N``: the N-th table of PATH; otherwise the
first table after the heading ANCHOR). Assembled blocks (``<!-- figures from: ... -->``) are
left alone: they are written by hand.
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START = re.compile(r"^<!--\s*from:\s*(.+?)\s*-->\s*$")
END = re.compile(r"^<!--\s*end\s*-->\s*$")


def tables(lines):
    """``[(first line index, [table lines])]``: runs of lines starting with ``|``."""
    out, current = [], None
    for i, line in enumerate(lines):
        if line.startswith("|"):
            if current is None:
                current = (i, [])
                out.append(current)
            current[1].append(line.rstrip())
        else:
            current = None
    return out


def source_table(argument):
    path, anchor = argument.split("#", 1)
    lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
    found = tables(lines)
    m = re.fullmatch(r"table-(\d+)", anchor)
    if m:
        return found[int(m.group(1)) - 1][1]
    heading = next(i for i, line in enumerate(lines)
                   if line.startswith("#") and line.lstrip("#").strip() == anchor.strip())
    return next(t for first, t in found if first > heading)


def refresh(doc):
    lines, out, i, changed = doc.read_text(encoding="utf-8").splitlines(), [], 0, False
    while i < len(lines):
        out.append(lines[i])
        start = START.match(lines[i])
        i += 1
        if start:
            old = []
            while not END.match(lines[i]):
                old.append(lines[i])
                i += 1
            new = source_table(start.group(1))
            changed |= [line.rstrip() for line in old if line.strip()] != new
            out.extend(new)
    if changed:
        doc.write_text("\n".join(out) + "\n", encoding="utf-8")
    return changed


if __name__ == "__main__":
    docs = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
    for doc in docs:
        if refresh(doc):
            print(f"refreshed {doc.relative_to(ROOT)}")
    sys.exit(0)
