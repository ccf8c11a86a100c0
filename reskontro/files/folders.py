"""The exchange folders' conventions, in one place: which names are temporary (left alone), how
a file is set aside (done/, failed/, rejected/) without overwriting anything, with the reason in
``<name>.reason.txt`` beside it, and how the files the product writes are created.

Every file the product creates is created exclusively and never through a symbolic link
(``O_CREAT|O_EXCL|O_NOFOLLOW``): whoever can write a folder may have planted a link at the
name, and a write through it would land wherever it points. A stale temporary name (a crash
left it, or someone planted it) is unlinked first, which removes the link itself, never what
it points to.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from pathlib import Path

_TEMPORARY = re.compile(r"(^\.|\.part$|\.tmp$|~$)")
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def is_temporary(name: str) -> bool:
    """Hidden, `.part`, `.tmp` or `~` names: still being written, never taken."""
    return bool(_TEMPORARY.search(name))


def printable_name(name: str) -> str:
    """`name` safe to show, log, store or use as a new file name: bytes that are not UTF-8
    (a name read with surrogateescape) as \\xNN, control characters as \\xNN."""
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def create_new(path: Path, mode: int = 0o666) -> int:
    """A new file at `path`, open for writing: FileExistsError if anything (a file, a link,
    even a dangling one) holds the name."""
    return os.open(path, _NEW, mode)


def create_temporary(path: Path, mode: int = 0o666) -> int:
    """A new temporary file at `path`, open for writing. What holds the name already (a stale
    file or a planted link) is unlinked without being followed; a directory there is an error."""
    for _ in range(5):
        try:
            return create_new(path, mode)
        except FileExistsError:
            try:
                if stat.S_ISDIR(os.lstat(path).st_mode):
                    raise IsADirectoryError(f"{path} is a directory, where a temporary file is written") from None
                os.unlink(path)
            except FileNotFoundError:
                pass
    raise FileExistsError(f"{path} keeps reappearing; another process is writing there")


def write_new(path: Path, data: bytes, mode: int = 0o666) -> None:
    """Write `data` to a new file `path` (exclusive, never through a link)."""
    fd = create_new(path, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:
        os.unlink(path)
        raise


def replace_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Put `data` at `path`, replacing what is there (a file or a link: the link itself is
    replaced, never followed): written to a unique temporary name in the same folder, fsynced,
    renamed over."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_of(f) -> str:
    """SHA-256 of an open binary file's whole content (read from its start)."""
    f.seek(0)
    return hashlib.file_digest(f, "sha256").hexdigest()


def unique(folder: Path, name: str) -> Path:
    """`folder/name`, or `name.1`, `name.2`, … if taken: nothing is ever overwritten."""
    target = folder / name
    n = 1
    while os.path.lexists(target):
        target = folder / f"{name}.{n}"
        n += 1
    return target


def set_aside(path: Path, folder: Path, reason: str | None = None, name: str | None = None) -> Path:
    """Move `path` into `folder` (as `name`), with the reason beside it when one is given.
    Neither the file nor its reason overwrites anything or is written through a link."""
    folder.mkdir(parents=True, exist_ok=True)
    base = name or path.name
    n = 0
    while True:
        target = folder / (base if n == 0 else f"{base}.{n}")
        n += 1
        note = target.with_name(target.name + ".reason.txt")
        if os.path.lexists(target) or (reason is not None and os.path.lexists(note)):
            continue
        if reason is not None:
            try:
                # a name that is not UTF-8 may be quoted in the reason: never a reason to fail
                write_new(note, (reason.rstrip("\n") + "\n").encode("utf-8", "backslashreplace"))
            except FileExistsError:
                continue           # taken meanwhile: the next name
        try:
            os.replace(path, target)
        except BaseException:
            if reason is not None:
                note.unlink(missing_ok=True)
            raise
        return target


def check_pinned(path: Path, check):
    """Run `check` on the file at `path`, pinned: opened once (never through a link), and the
    check reads that same open file (through /proc/self/fd where there is one), so a file
    swapped under the name meanwhile is not what gets checked. Returns (what `check` returned,
    the SHA-256 of the checked bytes), the hash None when the content changed while it was
    being checked (hashed before and after)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(f"{path} is not a regular file")
        before = sha256_of(f)
        same = Path(f"/proc/self/fd/{f.fileno()}")
        result = check(same if same.exists() else path)
        after = sha256_of(f)
    return result, (before if before == after else None)
