"""The exchange folders' conventions, in one place: which names are temporary (left alone), and
how a file is set aside (done/, failed/, rejected/) without overwriting anything, with the
reason in ``<name>.reason.txt`` beside it."""
from __future__ import annotations

import os
import re
from pathlib import Path

_TEMPORARY = re.compile(r"(^\.|\.part$|\.tmp$|~$)")


def is_temporary(name: str) -> bool:
    """Hidden, `.part`, `.tmp` or `~` names: still being written, never taken."""
    return bool(_TEMPORARY.search(name))


def unique(folder: Path, name: str) -> Path:
    """`folder/name`, or `name.1`, `name.2`, … if taken: nothing is ever overwritten."""
    target = folder / name
    n = 1
    while target.exists():
        target = folder / f"{name}.{n}"
        n += 1
    return target


def set_aside(path: Path, folder: Path, reason: str | None = None, name: str | None = None) -> Path:
    """Move `path` into `folder` (as `name`), with the reason beside it when one is given."""
    folder.mkdir(parents=True, exist_ok=True)
    target = unique(folder, name or path.name)
    os.replace(path, target)
    if reason is not None:
        target.with_name(target.name + ".reason.txt").write_text(reason.rstrip("\n") + "\n", encoding="utf-8")
    return target
