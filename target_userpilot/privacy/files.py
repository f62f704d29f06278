"""Files that hold personal data (rejected records, dry-run batches): owner-only on disk.

A file the run writes is readable by its owner only (0600), including one that already existed
with a wider mode; a folder the run creates is 0700, its missing parents too. Folders that
already exist (the working directory, a home) are the user's and keep their mode.
"""

from __future__ import annotations

import logging
import os
import stat

logger = logging.getLogger("target_userpilot")

#: Mode bits that let anyone but the owner in.
_OTHERS = stat.S_IRWXG | stat.S_IRWXO


def make_private_dirs(folder: str) -> None:
    """Create ``folder`` and each missing parent with mode 0700.

    ``os.makedirs(mode=0o700)`` gives that mode to the last folder only: its parents get the
    umask's 0755, and a listing of them shows which runs wrote what.
    """
    missing = []
    current = os.path.abspath(folder)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:  # another process made it a moment ago
            pass


def open_private(path: str, flags: int) -> int:
    """``os.open`` a file with mode 0600, and tighten a file that was there with a wider one.

    ``O_CREAT``'s mode applies only to a new file: a file kept from an earlier run (or made by
    another tool under the usual umask) would stay readable by everyone. A file of another
    owner cannot be changed: it gets a warning instead.
    """
    fd = os.open(path, flags, 0o600)
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_mode & _OTHERS:
            try:
                os.fchmod(fd, 0o600)
            except PermissionError:
                logger.warning(
                    "'%s' belongs to another user and is readable by others (mode %s); it "
                    "holds personal data. Make it owner-only (chmod 600) or choose another "
                    "path.",
                    path,
                    oct(stat.S_IMODE(info.st_mode)),
                )
    except BaseException:
        os.close(fd)
        raise
    return fd
