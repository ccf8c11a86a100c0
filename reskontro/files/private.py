"""Private files and folders: the store, the log, the configuration and keys/ are created 0600
(folders 0700) whatever the umask, since they hold the ledger, personal data and secrets."""
from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create `path` and any missing parents as 0700; a folder that exists is left as it is."""
    missing = []
    p = Path(path)
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue                     # made meanwhile by someone else: theirs
        os.chmod(d, DIR_MODE)            # mkdir's mode is masked by the umask
    return path


def create_private(path: Path) -> bool:
    """Create `path` as an empty 0600 file unless it exists; True if it was made now."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return True


def write_private(path: Path, text: str) -> None:
    """Write a text file as 0600, through a unique temporary name beside it, then renamed over
    any earlier file or link (whose mode therefore never carries over)."""
    from reskontro.files.folders import replace_file
    replace_file(path, text.encode("utf-8"), FILE_MODE)
