"""Files the library writes: one atomic writer, row files a run resumes, output directories.

Every output file goes through :func:`write_files` (or :func:`atomic_write` for one file): it is
written to a temporary name beside its target and renamed over it, so a reader never sees half
a file, a failed write leaves nothing behind, and a symbolic link at the target is replaced,
never followed. Written files get the mode ``0o666`` less the umask, as ``open`` gives them.

An :class:`OutputDirectory` is what a command writes into (``--out``): it keeps a manifest of
the files each command wrote there and the settings of its run, so a rerun replaces or deletes
only those files and never mixes results of other settings; a lock file keeps two runs out of
one directory at a time.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .validate import check_writable

MANIFEST = ".interpret-segmentation.json"
"""The manifest of an output directory: per command, the files it wrote and its settings."""
LOCK = ".interpret-segmentation.lock"
"""Held by the run writing into an output directory (pid, host, start time, command)."""

_UMASK_LOCK = threading.Lock()


def json_ready(value):
    """``value`` as plain JSON: numpy scalars and arrays, tuples and paths converted, NaN and
    infinities as None (strict JSON has neither)."""
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def current_umask() -> int:
    """The process's umask, read without changing it where the system tells it (Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # elsewhere umask() can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _exists_message(path: Path) -> str:
    return f"{path} exists; pass overwrite=True (--force) to replace it"


def _commit(temporary: str, path: Path, overwrite: bool) -> None:
    """Move a finished temporary file to ``path``; without ``overwrite`` never replace anything."""
    if overwrite:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)  # fails if anything, a link included, is at path
    except FileExistsError:
        raise FileExistsError(_exists_message(path)) from None
    except OSError:  # a file system without hard links
        if os.path.lexists(path):
            raise FileExistsError(_exists_message(path)) from None
        os.replace(temporary, path)


def _set_aside(path: Path) -> tuple[str, bool]:
    """A second name for the entry at ``path``, to restore it: a hard link, else the entry
    moved there (then True)."""
    aside = str(path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old"))
    try:
        os.link(path, aside, follow_symlinks=False)
        return aside, False
    except (OSError, NotImplementedError):
        os.replace(path, aside)
        return aside, True


def write_files(entries, *, overwrite: bool = False, sync: bool = True) -> list[Path]:
    """Write several files all together or not at all.

    Parameters
    ----------
    entries : iterable of (path, write, mode)
        ``write(file_object)`` fills the file opened with ``mode`` ("wb" or "w").
    overwrite : bool, default False
        Replace what is at a path; otherwise refuse (FileExistsError, nothing written) when
        any path exists, a dangling link included.
    sync : bool, default True
        Flush each file to disk before it is renamed.

    Every file is first written completely to a temporary name in its target's directory;
    then all are renamed into place. If anything fails, the files already renamed are taken
    back (what they replaced is restored) and the temporary files removed. A symbolic link at
    a path is replaced by the file, never written through.

    Returns
    -------
    list of Path
    """
    entries = [(Path(path), write, mode) for path, write, mode in entries]
    paths = [path for path, _, _ in entries]
    if len(set(paths)) != len(paths):
        raise ValueError(f"paths: expected different paths, got {[str(p) for p in paths]}")
    if not overwrite:
        for path in paths:
            if os.path.lexists(path):
                raise FileExistsError(_exists_message(path))
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            raise IsADirectoryError(f"{path} is a directory; expected a file path")
    permissions = 0o666 & ~current_umask()
    temporaries: list[str] = []
    committed: list[tuple[Path, str | None]] = []
    try:
        for path, write, mode in entries:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                                 suffix=".tmp")
            temporaries.append(temporary)
            with os.fdopen(handle, mode) as file:
                write(file)
                if sync:
                    file.flush()
                    os.fsync(file.fileno())
            os.chmod(temporary, permissions)  # mkstemp makes 0o600
        for (path, _, _), temporary in zip(entries, temporaries):
            aside, moved = (_set_aside(path) if overwrite and len(entries) > 1
                            and os.path.lexists(path) else (None, False))
            try:
                _commit(temporary, path, overwrite)
            except BaseException:
                if moved:
                    os.replace(aside, path)
                elif aside is not None:
                    os.unlink(aside)
                raise
            committed.append((path, aside))
    except BaseException:
        for path, aside in reversed(committed):
            try:
                if aside is None:
                    os.unlink(path)
                else:
                    os.replace(aside, path)
            except OSError:
                pass
        raise
    finally:
        for leftover in [*temporaries, *(aside for _, aside in committed if aside)]:
            if os.path.lexists(leftover):
                os.unlink(leftover)
    return paths


def atomic_write(path: str | os.PathLike, write, *, overwrite: bool = False,
                 mode: str = "wb", sync: bool = True) -> Path:
    """Write one file through ``write(file_object)`` to a temporary name, then rename it.

    Refuses (FileExistsError) when ``path`` exists and ``overwrite`` is False, so nothing
    the user made is replaced by accident; an interrupted write leaves no half file. See
    :func:`write_files`.
    """
    return write_files([(path, write, mode)], overwrite=overwrite, sync=sync)[0]


def read_own(path: str | os.PathLike) -> bytes | None:
    """The bytes of ``path``, None when absent; refuses (ValueError) a symbolic link, so a
    file the library extends is never one it would read or write through a link."""
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    if path.is_symlink():
        raise ValueError(f"{path} is a symbolic link; refusing to read or write through it, "
                         "remove it or choose another output path")
    try:
        handle = os.open(path, flags)
    except FileNotFoundError:
        return None
    with os.fdopen(handle, "rb") as file:
        return file.read()


def append_text(path: str | os.PathLike, text: str) -> Path:
    """Add ``text`` at the end of ``path`` (created if absent) by rewriting it atomically."""
    content = read_own(path) or b""
    return atomic_write(path, lambda file: file.write(content + text.encode()), overwrite=True)


def check_file_name(value: str, name: str) -> str:
    """``value`` after checking it is a plain file name (no directory part, not "." or "..").

    Raises ValueError naming the argument ``name``.
    """
    separators = {"/", os.sep, os.altsep} - {None}
    if (not isinstance(value, str) or value in ("", ".", "..")
            or any(s in value for s in separators) or "\0" in value):
        raise ValueError(f"{name}: expected a plain file name (no directory, not '.' or '..'), "
                         f"got {value!r}")
    return value


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's content, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_saved_pair(npz: Path, meta_path: Path, saver: str, written_by: str) -> tuple[dict, dict]:
    """The JSON object and the arrays of an ``.npz`` + ``.json`` pair that ``saver`` (e.g.
    "Explanation.save") wrote.

    Raises FileNotFoundError for a missing file, and ValueError naming the file and saying
    ``written_by`` (e.g. "not an Explanation written by Explanation.save") for unreadable JSON
    or JSON that is no object, and for an archive that is truncated or no ``.npz``.
    """
    for needed in (npz, meta_path):
        if not needed.exists():
            raise FileNotFoundError(f"{needed} not found ({saver} writes .npz + .json)")
    try:
        meta = json.loads(meta_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{meta_path}: {written_by} (unreadable JSON: {error})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: {written_by} (expected a JSON object)")
    try:
        data = np.load(npz, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not an .npz archive")
        with data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"{npz}: {written_by}, or truncated ({type(error).__name__}: "
                         f"{error})") from None
    return meta, arrays


def csv_text(fields, rows) -> str:
    """``rows`` (dicts) as CSV text with a header of ``fields``."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(fields))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(path, fields, rows) -> Path:
    """Write ``rows`` as a CSV of ``fields`` to ``path`` through :func:`atomic_write`,
    replacing it."""
    text = csv_text(fields, rows)
    return atomic_write(path, lambda file: file.write(text.encode()), overwrite=True)


class RowFile:
    """A CSV of result rows, written as they are made, that an interrupted run resumes.

    Opening an existing file keeps its complete rows (``rows``, values as text); a line that
    is cut short or has the wrong number of fields is dropped. Each :meth:`append` rewrites the
    file through :func:`atomic_write`, so on disk it always holds whole appends: the rows of one
    call are all there or none. A symbolic link at ``path`` is refused. Usable as a context
    manager (kept for older callers; there is nothing to close).
    """

    def __init__(self, path, fields):
        self.path, self.fields = Path(path), tuple(fields)
        self.rows: list[dict] = []
        content = read_own(self.path)
        if content:
            reader = csv.DictReader(io.StringIO(content.decode(errors="replace"), newline=""))
            if tuple(reader.fieldnames or ()) != self.fields:
                raise ValueError(f"{self.path}: expected the columns {', '.join(self.fields)}, "
                                 f"got {', '.join(reader.fieldnames or ())}; choose another "
                                 "output directory")
            last_complete = content.endswith(b"\n")
            rows = list(reader)
            if rows and not last_complete:
                rows.pop()  # an interrupted line
            self.rows = [row for row in rows
                         if None not in row.values() and None not in row and len(row) == len(self.fields)]

    def __enter__(self) -> RowFile:
        return self

    def __exit__(self, *error) -> None:
        pass

    def append(self, *rows: dict) -> None:
        """Add ``rows`` and write the file before going on."""
        self.rows.extend({key: str(row[key]) for key in self.fields} for row in rows)
        write_csv(self.path, self.fields, self.rows)


# ---------------------------------------------------------------------------------------------
# output directories


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no safe probe: never take over
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


class RunLock:
    """A lock file: created with O_CREAT | O_EXCL, holding pid, host, start time and command.

    A lock whose process is gone (same host, pid not running) is taken over. ``wait``
    seconds are spent retrying before a held lock is refused.
    """

    def __init__(self, path, command: str, label: str = "--out", wait: float = 0.0):
        self.path, self.command, self.label, self.wait = Path(path), command, label, wait
        self.held = False

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def _stale(self, holder: dict | None) -> bool:
        return (isinstance(holder, dict) and holder.get("host") == socket.gethostname()
                and isinstance(holder.get("pid"), int) and holder["pid"] != os.getpid()
                and not _pid_alive(holder["pid"]))

    def acquire(self) -> None:
        """Take the lock or raise FileExistsError naming the run that holds it."""
        content = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                              "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "command": self.command, "argv": sys.argv})
        deadline = time.monotonic() + self.wait
        while True:
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                holder = self._holder()
                if self._stale(holder) and self._holder() == holder:
                    self.path.unlink(missing_ok=True)
                    continue
                if time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                raise FileExistsError(self._refusal(holder)) from None
            with os.fdopen(handle, "w") as file:
                file.write(content)
            self.held = True
            return

    def _refusal(self, holder) -> str:
        directory = self.path.parent
        if not isinstance(holder, dict):
            return (f"{self.label} {directory} is in use by another run (lock file {self.path}); "
                    "wait for it to finish, or remove the lock file if no run is writing there")
        argv = " ".join(holder.get("argv") or []) or holder.get("command")
        return (f"{self.label} {directory} is in use by another run: `{holder.get('command')}` "
                f"(pid {holder.get('pid')} on {holder.get('host')}, started "
                f"{holder.get('started')}: {argv}); wait for it to finish, or remove "
                f"{self.path} if that run is gone")

    def release(self) -> None:
        """Remove the lock file if this process holds it."""
        if self.held:
            holder = self._holder()
            if holder is None or holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False


class OutputDirectory:
    """The directory a command writes into, with a manifest of what each command wrote.

    Parameters
    ----------
    path : str or Path
        The directory (``--out``); created when missing.
    command : str
        The command writing, e.g. "demo" or "evaluate"; each has its own part of the manifest.
    force : bool, default False
        Write into a non-empty directory this command did not make, and replace files at the
        names it writes that it did not write. Files it does not write are never touched.
    settings : dict, optional
        JSON values that decide the command's results (checkpoint hash, data set, method
        parameters, seed, ...). A directory holding a run of other settings is refused
        (ValueError naming the differing settings), so a rerun resumes and never mixes.
    extendable : tuple of str, default ()
        Settings that are dicts a rerun may add entries to (e.g. "methods": a new method
        joins the run; one whose parameters changed is refused).
    replace_own : bool, default True
        Replace files this command wrote here before without ``force``.
    wait : float, default 0
        Seconds to wait for another run's lock before refusing.
    label : str, default "--out"
        How messages name the directory.

    Constructing one only reads: it checks the directory, the manifest and the settings.
    Entering it (``with``) creates the directory, takes the lock (:data:`LOCK`) and records
    the settings; leaving it releases the lock. Ask for each output path with :meth:`file`,
    :meth:`files` or :meth:`directory` before writing it: that checks the name and records it.
    """

    def __init__(self, path, command: str, *, force: bool = False, settings: dict | None = None,
                 extendable: tuple = (), replace_own: bool = True, wait: float = 0.0,
                 label: str = "--out"):
        self.path, self.command, self.force = Path(path), command, bool(force)
        self.settings = None if settings is None else json.loads(json.dumps(settings))
        self.extendable, self.replace_own, self.label = tuple(extendable), replace_own, label
        self.lock = RunLock(self.path / LOCK, command, label, wait)
        self._check()

    # -- the manifest ------------------------------------------------------------------------

    def _read_manifest(self) -> dict:
        content = read_own(self.path / MANIFEST) if self.path.is_dir() else None
        if content is None:
            return {"commands": {}}
        try:
            manifest = json.loads(content)
        except ValueError:
            manifest = None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("commands"), dict):
            raise ValueError(f"{self.label}: {self.path / MANIFEST} is not a manifest this "
                             "library wrote; remove it or choose another directory")
        return manifest

    def _section(self) -> dict | None:
        return self.manifest["commands"].get(self.command)

    def _save(self) -> None:
        atomic_write(self.path / MANIFEST,
                     lambda file: file.write(json.dumps(self.manifest, indent=1) + "\n"),
                     overwrite=True, mode="w")

    def _check(self) -> None:
        """Refuse what this run may not write into; reads only."""
        path = self.path
        if path.is_symlink():
            raise ValueError(f"{self.label}: {path} is a symbolic link; give the directory "
                             "it points to, or another directory")
        if path.exists() and not path.is_dir():
            raise ValueError(f"{self.label}: expected a directory, got the file {path}")
        check_writable(path, self.label)
        self.manifest = self._read_manifest()
        section = self._section()
        if section is None:
            others = ([p.name for p in path.iterdir() if p.name not in (MANIFEST, LOCK)]
                      if path.is_dir() else [])
            if others and not self.force:
                raise FileExistsError(
                    f"{self.label}: {path} is not empty and was not made by "
                    f"`interpret-segmentation {self.command}`; choose another {self.label}, or "
                    "pass --force to write beside what is there (nothing else is deleted)")
        elif self.settings is not None and section.get("settings") is not None:
            differing = self._differing(section["settings"], self.settings)
            if differing:
                shown = "; ".join(differing[:3]) + (f"; and {len(differing) - 3} more"
                                                    if len(differing) > 3 else "")
                raise ValueError(
                    f"{self.label}: {path} holds a `{self.command}` run with other settings "
                    f"({shown}); its results would mix with these, so choose another "
                    f"{self.label} for this run")

    def _differing(self, old: dict, new: dict, prefix: str = "") -> list[str]:
        """``key: value there, value now`` for each setting that differs (dotted names)."""
        found = []
        for key in sorted(set(old) | set(new)):
            before, after = old.get(key), new.get(key)
            if isinstance(before, dict) and isinstance(after, dict):
                if not prefix and key in self.extendable:  # only entries both runs have
                    common = set(before) & set(after)
                    before = {k: v for k, v in before.items() if k in common}
                    after = {k: v for k, v in after.items() if k in common}
                found += self._differing(before, after, f"{prefix}{key}.")
            elif before != after:
                found.append(f"{prefix}{key}: {_short(before)} there, {_short(after)} now")
        return found

    # -- a run -------------------------------------------------------------------------------

    def __enter__(self) -> OutputDirectory:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
        except PermissionError as error:
            raise ValueError(f"{self.label}: cannot write in {self.path} ({error.strerror})") from None
        try:
            self._check()  # again, now that no other run can change the manifest
            section = self._section()
            if section is None:
                section = self.manifest["commands"][self.command] = {"files": [],
                                                                     "directories": []}
            if self.settings is not None:
                merged = dict(self.settings)
                for key in self.extendable:
                    old = (section.get("settings") or {}).get(key)
                    if isinstance(old, dict) and isinstance(merged.get(key), dict):
                        merged[key] = {**old, **merged[key]}
                section["settings"] = merged
            self._save()
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(self, *error) -> None:
        self.lock.release()

    @property
    def resumed(self) -> bool:
        """Whether this command wrote files here before."""
        section = self._section()
        return bool(section and section["files"])

    def _own(self, name: str) -> bool:
        section = self._section()
        return section is not None and (name in section["files"]
                                         or name in section["directories"])

    def _target(self, name) -> Path:
        """``path / name`` after checking ``name`` stays inside and passes no link."""
        parts = Path(name).parts
        if (not parts or Path(name).is_absolute() or any(p in ("", ".", "..") for p in parts)
                or name in (MANIFEST, LOCK)):
            raise ValueError(f"name: expected a relative path inside {self.label}, got {name!r}")
        for depth in range(1, len(parts)):
            above = self.path.joinpath(*parts[:depth])
            if above.is_symlink() or (above.exists() and not above.is_dir()):
                raise ValueError(f"{self.label}: {above} is a symbolic link or a file; refusing "
                                 f"to write {name} through it")
        return self.path / name

    def check(self, *names) -> list[Path]:
        """The paths of ``names``, after checking that this run may write them (reads only).

        Raises FileExistsError for an existing entry this command did not write (unless
        ``force``) or wrote before when it may not replace its own files.
        """
        paths = []
        for name in map(_name, names):
            target = self._target(name)
            if os.path.lexists(target) and not self.force:
                if not self._own(name):
                    raise FileExistsError(
                        f"{target} exists and was not written by `interpret-segmentation "
                        f"{self.command}`; pass --force to replace it, or choose another "
                        f"{self.label}")
                if not self.replace_own:
                    raise FileExistsError(f"{target} exists; pass --force to replace it")
            paths.append(target)
        return paths

    def files(self, *names) -> list[Path]:
        """Check ``names`` (str or Path, relative; :meth:`check`), record them as this
        command's and return their paths; their directories are created. Write each through
        the atomic writer."""
        names = [_name(name) for name in names]
        paths = self.check(*names)
        section = self._section()
        if section is None:
            raise RuntimeError("OutputDirectory: enter it (with ...) before asking for files")
        for name in names:
            for depth in range(1, len(Path(name).parts)):
                above = Path(*Path(name).parts[:depth])
                if not (self.path / above).exists():
                    (self.path / above).mkdir()
                    section["directories"].append(above.as_posix())
            if name not in section["files"]:
                section["files"].append(name)
        self._save()
        return paths

    def file(self, name) -> Path:
        """:meth:`files` for one name."""
        return self.files(name)[0]

    def directory(self, name, create: bool = True) -> Path:
        """A sub-directory this command owns (checked like a file, and no link), created
        unless ``create`` is False (for a writer that makes it itself)."""
        name = _name(name)
        target = self.check(name)[0]
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            raise ValueError(f"{self.label}: {target} is a symbolic link or a file, expected a "
                             "directory")
        section = self._section()
        if name not in section["directories"]:
            section["directories"].append(name)
            self._save()
        if create:
            target.mkdir(parents=True, exist_ok=True)
        return target

    def clear(self) -> None:
        """Delete the files this command wrote here and the directories it made that are then
        empty; nothing else. A name that no longer holds a plain file (a link put in its
        place, say) is left as it is, and stays claimed: writing it replaces the link."""
        section = self._section()
        kept = []
        for name in section["files"]:
            try:
                target = self._target(name)
            except ValueError:  # a directory above it became a link: leave all of it
                continue
            if target.is_file() and not target.is_symlink():
                target.unlink()
            elif os.path.lexists(target):
                kept.append(name)
        for name in sorted(section["directories"], key=lambda d: -len(Path(d).parts)):
            try:
                (self.path / name).rmdir()  # only when empty; never follows a link
            except OSError:
                pass
        section["files"] = kept
        section["directories"] = [name for name in section["directories"]
                                  if (self.path / name).is_dir()]
        self._save()


def _name(name) -> str:
    """A name inside an output directory as text with "/" separators."""
    return Path(name).as_posix() if isinstance(name, (str, os.PathLike)) else name


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."
