"""Writing a file that holds every tenant's personal data, safely even when run as root.

`notifier export --out PATH` writes to a fresh temporary file beside PATH and renames it into
place. The temporary file is created exclusively with a random name (so a symlink planted at a
predictable `PATH.part` cannot redirect the write) and mode 0600 (only the owner may read it).
A PATH that exists and is not a regular file (a symlink, a device, a FIFO, a directory) is
refused, so the rename never replaces `/dev/sda` or a link's target.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import IO

from notifier.errors import NotifierError


class UnsafeTarget(NotifierError):
    """The output path is not one notifier will write to."""


def check_target(target: Path) -> None:
    """Refuse a target that exists and is not a regular file (symlinks are not followed)."""
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise UnsafeTarget(f"refusing to write {target}: it exists and is not a regular file")


def open_private_temp(target: Path) -> tuple[Path, IO[str]]:
    """A new, empty, 0600 file beside `target`, created exclusively, open for writing."""
    check_target(target)
    descriptor, name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".part"
    )
    os.fchmod(descriptor, 0o600)
    return Path(name), os.fdopen(descriptor, "w", encoding="utf-8")


def publish(temporary: Path, target: Path) -> None:
    """Rename the finished file into place, checking the target once more just before."""
    check_target(target)
    os.replace(temporary, target)
