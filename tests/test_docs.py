"""The documentation agrees with the results files, and its links resolve.

Figures in ``README.md`` and ``docs/*.md`` come from the results files the benchmarks write
(``benchmarks/results/*.md``). A table copied from one sits between two markers::

    <!-- from: benchmarks/results/unlearning.md#table-1 -->
    | ... the table, exactly as in the results file ... |
    <!-- end -->

* The path is relative to the repository root (the same in README.md and in docs/).
* The anchor after ``#`` names one table of that file: ``table-N`` is its N-th table (1-based;
  a table is a maximal run of lines starting with ``|``), any other text is a heading line of
  the file (its text without the leading ``#`` marks), meaning the first table after that
  heading.
* The block between the markers (blank lines at its ends ignored) must equal that table line
  for line (trailing spaces ignored).

A table assembled by hand from several results files (a summary that picks cells of
several tables) sits between::

    <!-- figures from: benchmarks/results/a.md benchmarks/results/b.md -->
    ...
    <!-- end -->

and every number in its body rows (not its header) must be a number of one of those files, as
written there or rounded to the decimals shown.

Also checked: every relative link (and ``#anchor`` into a markdown file) in README.md and
docs/*.md resolves; no file of the repository points outside it (to the design notes of the
workspace it was developed in); README.md stays short.
"""
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 250
# the forbidden pointers, assembled so that this file does not contain them itself
OUTSIDE = ["../" + "shared", "shared/" + "design"]

START = re.compile(r"^<!--\s*(from|figures from):\s*(.+?)\s*-->\s*$")
END = re.compile(r"^<!--\s*end\s*-->\s*$")
NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")


def rel(path):
    return path.relative_to(REPO).as_posix()


# --------------------------------------------------------------------------- markdown helpers

def without_code(lines):
    """``lines`` with the lines of fenced code blocks blanked (indices kept)."""
    out, fenced = [], False
    for line in lines:
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append("")
        else:
            out.append("" if fenced else line)
    return out


def tables(lines):
    """``[(index of the first line, [table lines])]``: maximal runs of lines starting with '|'."""
    found, current, first = [], [], None
    for i, line in enumerate(lines + [""]):
        if line.startswith("|"):
            if not current:
                first = i
            current.append(line.rstrip())
        elif current:
            found.append((first, current))
            current = []
    return found


def source_table(path, anchor):
    """The table of results file ``path`` that ``anchor`` names (see the module docstring)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = tables(lines)
    m = re.fullmatch(r"table-(\d+)", anchor)
    if m:
        n = int(m.group(1))
        assert 1 <= n <= len(found), f"{rel(path)} has {len(found)} table(s), no table-{n}"
        return found[n - 1][1]
    headings = [i for i, line in enumerate(lines)
                if line.startswith("#") and line.lstrip("#").strip() == anchor.strip()]
    assert headings, f"{rel(path)} has no heading {anchor!r}"
    after = [t for first, t in found if first > headings[0]]
    assert after, f"{rel(path)} has no table after the heading {anchor!r}"
    return after[0]


def blocks(path):
    """``[(line number, kind, argument, [lines])]`` of the marked blocks of a markdown file."""
    out, open_ = [], None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        start, end = START.match(line), END.match(line)
        if start:
            assert open_ is None, f"{rel(path)}:{number}: a marker opens inside the block of line {open_[0]}"
            open_ = (number, start.group(1), start.group(2), [])
        elif end:
            assert open_ is not None, f"{rel(path)}:{number}: '<!-- end -->' without an opening marker"
            out.append(open_)
            open_ = None
        elif open_ is not None:
            open_[3].append(line)
    assert open_ is None, f"{rel(path)}:{open_[0]}: marker never closed by '<!-- end -->'"
    return out


def trimmed(lines):
    lines = [line.rstrip() for line in lines]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def numbers(text):
    return [n.replace(",", "") for n in NUMBER.findall(text)]


def slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path):
    seen, out = {}, set()
    for line in without_code(path.read_text(encoding="utf-8").splitlines()):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            k = seen.get(base, 0)
            seen[base] = k + 1
            out.add(base if k == 0 else f"{base}-{k}")
    return out


def links(path):
    """Link targets of ``[text](target)`` and ``![alt](target)`` outside code."""
    text = "\n".join(without_code(path.read_text(encoding="utf-8").splitlines()))
    text = re.sub(r"`[^`\n]*`", "", text)                  # code spans
    return re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)


# --------------------------------------------------------------------------- the checks

ALL_BLOCKS = [(doc, *block) for doc in DOCS for block in blocks(doc)]


def block_id(item):
    doc, line, kind, argument, _ = item
    return f"{rel(doc)}:{line}"


@pytest.mark.parametrize("item", [b for b in ALL_BLOCKS if b[2] == "from"], ids=block_id)
def test_copied_table_equals_results_file(item):
    doc, line, _, argument, body = item
    path, _, anchor = argument.partition("#")
    source = REPO / path
    assert source.is_file(), f"{rel(doc)}:{line}: no results file {path}"
    assert anchor, f"{rel(doc)}:{line}: name a table: {path}#table-N or {path}#<heading>"
    expected = source_table(source, anchor)
    actual = trimmed(body)
    assert actual == expected, (f"{rel(doc)}:{line}: the table differs from {argument}; copy it again "
                                f"from the results file")


@pytest.mark.parametrize("item", [b for b in ALL_BLOCKS if b[2] == "figures from"], ids=block_id)
def test_assembled_table_figures_are_in_results_files(item):
    doc, line, _, argument, body = item
    known = set()
    for path in argument.split():
        source = REPO / path
        assert source.is_file(), f"{rel(doc)}:{line}: no results file {path}"
        for n in numbers(source.read_text(encoding="utf-8")):
            known.add(n)
            value = float(n)
            known.update(f"{value:.{k}f}" for k in range(5))
    rows = [r for r in trimmed(body) if r.startswith("|")]
    assert len(rows) > 2, f"{rel(doc)}:{line}: no table in the block"
    missing = [(r.split("|")[1].strip(), n) for r in rows[2:] for n in numbers(r) if n not in known]
    assert not missing, f"{rel(doc)}:{line}: figures not in {argument}: {missing}"


def test_readme_has_marked_results():
    assert any(doc.name == "README.md" and doc.parent == REPO and kind == "from"
               for doc, _, kind, _, _ in ALL_BLOCKS), "README.md's results table is not marked"


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_relative_links_resolve(doc):
    broken = []
    for target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):          # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(target)
            continue
        try:
            dest.relative_to(REPO)
        except ValueError:
            broken.append(f"{target} (outside the repository)")
            continue
        if fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{rel(doc)}: broken links {broken}"


def test_docs_pages_are_indexed():
    index = REPO / "docs" / "README.md"
    assert index.is_file()
    linked = {(index.parent / t.partition("#")[0]).resolve() for t in links(index)}
    pages = {p.resolve() for p in (REPO / "docs").glob("*.md")} - {index.resolve()}
    assert not pages - linked, f"docs pages missing from docs/README.md: {sorted(p.name for p in pages - linked)}"


def repository_files():
    """The repository's files: tracked or untracked-but-not-ignored (git), else a walk."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=REPO, capture_output=True, check=True, timeout=30).stdout
        files = [REPO / name for name in out.decode("utf-8", "surrogateescape").split("\0") if name]
    except (OSError, subprocess.SubprocessError):
        skip = {".git", ".venv", "__pycache__", ".pytest_cache"}
        files = [p for p in REPO.rglob("*") if not skip.intersection(p.relative_to(REPO).parts)]
    return [p for p in files if p.is_file() and not p.is_symlink()]


def test_nothing_points_outside_the_repository():
    needles = [s.encode() for s in OUTSIDE]
    offenders = [rel(p) for p in repository_files() if any(n in p.read_bytes() for n in needles)]
    assert not offenders, f"files pointing outside the repository ({' / '.join(OUTSIDE)}): {offenders}"


def test_readme_is_short():
    n = len((REPO / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}): move detail into docs/"
