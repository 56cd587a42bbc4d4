import json
import os
import subprocess
import sys

import pytest

from interpret_segmentation.core.io import (
    LOCK,
    MANIFEST,
    OutputDirectory,
    RowFile,
    append_text,
    atomic_write,
    check_file_name,
    write_files,
)


def _text(content):
    return lambda file: file.write(content)


def test_a_link_at_the_target_is_replaced_and_its_target_untouched(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("the user's")
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").symlink_to(outside)
    with pytest.raises(FileExistsError, match="report.md exists"):
        atomic_write(out / "report.md", _text("new"), mode="w")
    (out / "dangling.md").symlink_to(tmp_path / "nowhere.md")
    with pytest.raises(FileExistsError):  # a dangling link counts as taken
        atomic_write(out / "dangling.md", _text("new"), mode="w")
    assert not (tmp_path / "nowhere.md").exists()
    atomic_write(out / "report.md", _text("new"), mode="w", overwrite=True)
    assert not (out / "report.md").is_symlink() and (out / "report.md").read_text() == "new"
    assert outside.read_text() == "the user's"
    append_text(out / "log.txt", "a\n")
    append_text(out / "log.txt", "b\n")
    assert (out / "log.txt").read_text() == "a\nb\n"
    (out / "linked.txt").symlink_to(outside)
    with pytest.raises(ValueError, match="symbolic link"):
        append_text(out / "linked.txt", "more\n")
    assert outside.read_text() == "the user's"
    assert sorted(p.name for p in out.iterdir()) == ["dangling.md", "linked.txt", "log.txt",
                                                      "report.md"]  # no temporary files left


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077, 0o002])
def test_written_files_get_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = atomic_write(tmp_path / "a.bin", _text(b"x"))
        append_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    for written in (path, tmp_path / "b.txt"):
        assert written.stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_files_writes_all_or_nothing(tmp_path, monkeypatch):
    (tmp_path / "b").write_text("old b")

    def failing(file):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_files([(tmp_path / "a", _text("new a"), "w"), (tmp_path / "b", failing, "w")],
                    overwrite=True)
    assert not (tmp_path / "a").exists() and (tmp_path / "b").read_text() == "old b"
    with pytest.raises(FileExistsError):  # one taken path: nothing is written
        write_files([(tmp_path / "a", _text("new a"), "w"), (tmp_path / "b", _text("b"), "w")])
    assert not (tmp_path / "a").exists()
    (tmp_path / "a").write_text("old a")
    rename = os.replace

    def fail_on_b(source, target, *args, **kwargs):
        if str(target) == str(tmp_path / "b"):
            raise OSError("rename failed")
        return rename(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", fail_on_b)
    with pytest.raises(OSError, match="rename failed"):
        write_files([(tmp_path / "a", _text("new a"), "w"), (tmp_path / "b", _text("new b"), "w")],
                    overwrite=True)
    monkeypatch.undo()
    assert (tmp_path / "a").read_text() == "old a" and (tmp_path / "b").read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_row_file_keeps_whole_rows_and_refuses_links(tmp_path):
    path = tmp_path / "rows.csv"
    with RowFile(path, ("index", "value")) as rows:
        rows.append({"index": 0, "value": 0.5}, {"index": 1, "value": 1.5})
    path.write_text(path.read_text() + "2,0.7")  # a line an interrupted writer left
    again = RowFile(path, ("index", "value"))
    assert again.rows == [{"index": "0", "value": "0.5"}, {"index": "1", "value": "1.5"}]
    again.append({"index": 2, "value": 2.5})
    assert path.read_text().splitlines() == ["index,value", "0,0.5", "1,1.5", "2,2.5"]
    with pytest.raises(ValueError, match="columns"):
        RowFile(path, ("index", "other"))
    (tmp_path / "link.csv").symlink_to(path)
    with pytest.raises(ValueError, match="symbolic link"):
        RowFile(tmp_path / "link.csv", ("index", "value"))


@pytest.mark.parametrize("name", ["../..", "..", ".", "", "a/b", "../x", "/tmp/x"])
def test_file_names_with_a_directory_part_are_refused(name):
    with pytest.raises(ValueError, match="--name: expected a plain file name"):
        check_file_name(name, "--name")
    assert check_file_name("run-2.txt", "--name") == "run-2.txt"


def test_output_directory_refuses_what_it_did_not_make_and_deletes_only_its_own(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not empty.*--force"):
        OutputDirectory(out, "demo")
    with OutputDirectory(out, "demo", force=True) as output:
        output.clear()
        for name in ("a.txt", "sub/b.txt"):
            atomic_write(output.file(name), _text("mine"), mode="w", overwrite=True)
        for bad in ("../escape.txt", "/tmp/x", MANIFEST):
            with pytest.raises(ValueError, match="name"):
                output.file(bad)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["commands"]["demo"]["files"] == ["a.txt", "sub/b.txt"]
    assert not (out / LOCK).exists()
    with OutputDirectory(out, "demo") as output:  # made by demo now: no --force needed
        assert output.resumed
        with pytest.raises(FileExistsError, match="notes.txt exists and was not written"):
            output.file("notes.txt")  # without --force, only its own names are replaced
        output.clear()
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "notes.txt"]
    assert (out / "notes.txt").read_text() == "keep"
    with pytest.raises(FileExistsError):  # another command did not make it
        OutputDirectory(out, "explain")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="expected a directory"):
        OutputDirectory(tmp_path / "file", "demo")
    (tmp_path / "link").symlink_to(out)
    with pytest.raises(ValueError, match="symbolic link"):
        OutputDirectory(tmp_path / "link", "demo")


def test_output_directory_never_writes_through_a_linked_directory(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    with OutputDirectory(out, "demo") as output:
        atomic_write(output.file("sub/a.txt"), _text("mine"), mode="w")
    (out / "sub" / "a.txt").unlink()
    (out / "sub").rmdir()
    (out / "sub").symlink_to(outside)
    (outside / "a.txt").write_text("the user's")
    with OutputDirectory(out, "demo") as output:
        output.clear()
        with pytest.raises(ValueError, match="symbolic link"):
            output.file("sub/a.txt")
    assert (outside / "a.txt").read_text() == "the user's"


def test_a_rerun_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "out"
    settings = {"checkpoint_sha256": "aa", "seed": 0, "methods": {"rise": {"s": 8}}}
    with OutputDirectory(out, "evaluate", settings=settings, extendable=("methods",)):
        pass
    for changed, named in (({"seed": 1}, "seed: 0 there, 1 now"),
                           ({"checkpoint_sha256": "bb"}, "checkpoint_sha256"),
                           ({"methods": {"rise": {"s": 4}}}, r"methods\.rise\.s: 8 there, 4 now")):
        with pytest.raises(ValueError, match=f"--out: {out} holds .*{named}"):
            OutputDirectory(out, "evaluate", settings={**settings, **changed},
                            extendable=("methods",))
    more = {**settings, "methods": {"gradcam": {"layer": "x"}}}  # a new method joins the run
    with OutputDirectory(out, "evaluate", settings=more, extendable=("methods",)):
        pass
    saved = json.loads((out / MANIFEST).read_text())["commands"]["evaluate"]["settings"]
    assert saved["methods"] == {"rise": {"s": 8}, "gradcam": {"layer": "x"}}


def test_a_second_run_is_refused_by_the_lock_naming_the_first(tmp_path):
    out = tmp_path / "out"
    with OutputDirectory(out, "sweep"):
        with pytest.raises(FileExistsError, match=rf"in use by another run: `sweep` \(pid {os.getpid()}"):
            with OutputDirectory(out, "sweep"):
                pass
    assert not (out / LOCK).exists()
    with pytest.raises(RuntimeError):  # released after an error too
        with OutputDirectory(out, "sweep"):
            raise RuntimeError
    assert not (out / LOCK).exists()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    import socket

    (out / LOCK).write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname(),
                                        "started": "then", "command": "sweep", "argv": []}))
    with OutputDirectory(out, "sweep"):  # the process that held it is gone: taken over
        assert json.loads((out / LOCK).read_text())["pid"] == os.getpid()
    assert not (out / LOCK).exists()
