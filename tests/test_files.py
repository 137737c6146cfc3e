"""The one atomic-write helper and the one unique-name helper (:mod:`recbole_tru.files`)."""
import os
import stat
from pathlib import Path

import pytest

from recbole_tru.files import atomic_write, save_png, unique_path, write_text, write_texts


def text(content):
    return lambda tmp: Path(tmp).write_text(content, encoding="utf-8")


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_writes_a_new_file_and_creates_its_folder(tmp_path):
    path = tmp_path / "a" / "b" / "out.txt"
    assert atomic_write(path, text("hello")) == path
    assert path.read_text(encoding="utf-8") == "hello"
    assert leftovers(path.parent) == []


def test_the_temporary_file_exists_beside_the_target_while_written(tmp_path):
    seen = []

    def write(tmp):
        seen.append(Path(tmp))
        assert Path(tmp).is_file() and Path(tmp).parent == tmp_path
        Path(tmp).write_text("x", encoding="utf-8")

    atomic_write(tmp_path / "out.txt", write)
    assert seen[0].name.startswith(".out.txt.") and seen[0].name.endswith(".tmp")
    assert not seen[0].exists()


def test_refuses_an_existing_path_and_leaves_it_alone(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old", encoding="utf-8")
    calls = []
    with pytest.raises(FileExistsError, match="never overwrites"):
        atomic_write(path, lambda tmp: calls.append(tmp))
    assert calls == []                                   # nothing was even written
    assert path.read_text(encoding="utf-8") == "old"
    assert leftovers(tmp_path) == []


def test_refuses_a_path_created_while_writing(tmp_path):
    """Another process creating the target meanwhile wins; ours is dropped, not swapped in."""
    path = tmp_path / "out.txt"

    def write(tmp):
        Path(tmp).write_text("ours", encoding="utf-8")
        path.write_text("theirs", encoding="utf-8")

    with pytest.raises(FileExistsError):
        atomic_write(path, write)
    assert path.read_text(encoding="utf-8") == "theirs"
    assert leftovers(tmp_path) == []


def test_replace_swaps_an_existing_file(tmp_path):
    path = tmp_path / "cache.bin"
    path.write_text("stale", encoding="utf-8")
    before = path.stat().st_ino
    atomic_write(path, text("fresh"), replace=True)
    assert path.read_text(encoding="utf-8") == "fresh"
    assert path.stat().st_ino != before                  # a new file, renamed over the old one
    assert leftovers(tmp_path) == []
    atomic_write(tmp_path / "new.bin", text("new"), replace=True)     # and it creates new files
    assert (tmp_path / "new.bin").read_text(encoding="utf-8") == "new"


@pytest.mark.parametrize("replace", [False, True])
@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()], ids=["OSError", "interrupt"])
def test_a_failing_write_leaves_neither_target_nor_temporary_file(tmp_path, replace, error):
    path = tmp_path / "out.txt"

    def write(tmp):
        Path(tmp).write_text("half", encoding="utf-8")
        raise error

    with pytest.raises(type(error)):
        atomic_write(path, write, replace=replace)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_failing_replace_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old", encoding="utf-8")

    def write(tmp):
        raise ValueError("bad data")

    with pytest.raises(ValueError):
        atomic_write(path, write, replace=True)
    assert path.read_text(encoding="utf-8") == "old"
    assert leftovers(tmp_path) == []


def test_written_files_have_plain_permissions(tmp_path):
    """The result is readable as a plain open() would make it (not mkstemp's 0600)."""
    umask = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "out.txt", text("x"))
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_unique_path_numbers_after_existing_ones(tmp_path):
    base = tmp_path / "run-20250101"
    assert unique_path(base) == base
    base.mkdir()
    assert unique_path(base) == tmp_path / "run-20250101-1"
    (tmp_path / "run-20250101-1").mkdir()
    assert unique_path(base) == tmp_path / "run-20250101-2"
    assert not (tmp_path / "run-20250101-2").exists()    # only named, never created


def test_unique_path_with_a_suffix(tmp_path):
    base = tmp_path / "VBPR-ml-20250101"
    assert unique_path(base, ".pth") == tmp_path / "VBPR-ml-20250101.pth"
    (tmp_path / "VBPR-ml-20250101.pth").write_bytes(b"")
    (tmp_path / "VBPR-ml-20250101-1.pth").write_bytes(b"")
    assert unique_path(str(base), ".pth") == tmp_path / "VBPR-ml-20250101-2.pth"
    assert unique_path(base) == base                     # the suffix-less name is free


def test_text_shorthands_keep_atomic_writes_rules(tmp_path):
    """write_text is atomic_write for UTF-8 text: a new file, never over an existing one unless
    told; write_texts regenerates a benchmark's json / md pair in place."""
    path = write_text(tmp_path / "a" / "report.md", "é 1\n")
    assert path.read_bytes() == "é 1\n".encode("utf-8")
    with pytest.raises(FileExistsError):
        write_text(path, "other")
    assert path.read_text(encoding="utf-8") == "é 1\n"
    write_text(path, "new", replace=True)
    assert path.read_text(encoding="utf-8") == "new"
    write_texts(tmp_path / "b", "run", [("json", "{}"), ("md", "| a |\n")])
    write_texts(tmp_path / "b", "run", [("json", '{"x": 1}'), ("md", "| b |\n")])
    assert (tmp_path / "b" / "run.json").read_text() == '{"x": 1}'
    assert (tmp_path / "b" / "run.md").read_text() == "| b |\n"
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["run.json", "run.md"]   # no temporary left


def test_save_png_writes_a_png_and_replaces_by_default(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_png(fig, tmp_path / "plot.png")
    first = path.read_bytes()
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    ax.plot([0, 1], [0, 1])
    save_png(fig, path)                               # a plot is derived: regenerated in place
    assert path.read_bytes() != first
    with pytest.raises(FileExistsError):
        save_png(fig, path, replace=False)
    plt.close(fig)
