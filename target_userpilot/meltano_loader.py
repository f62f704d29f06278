"""Meltano's loader test (``meltano config test``): a failed check where Meltano's user sees it.

Meltano sends its test stream (``meltano_test_stream``) and reads the loader's standard output
and error through one pipe, logging each line at debug level only. When the loader fails,
Meltano 4.4.1 then ends in a ``ProcessLookupError`` of its own (it terminates the loader after
waiting for its exit) in nearly every run, before it prints the last line it read: at its
default log level, the loader's reason never appears, whatever the loader writes and however.
(Measured with the pinned Meltano: 10 runs of 12; the other two print the last line.)

So when the connection check of the test stream fails, its one-line reason is also written to
the standard error of the process that started the target (Meltano's own), which is where its
user looks. Linux only (``/proc``); anywhere else, or when that stream is the target's own (a
shell that started the target by hand), nothing more is written.
"""

from __future__ import annotations

import os


def tell_parent(line: str) -> bool:
    """Write ``line`` to the parent process's standard error, when that is not ours.

    Never blocks (a full pipe drops the line) and never raises: this only repeats a reason the
    target also logs. True when the line was written.
    """
    path = f"/proc/{os.getppid()}/fd/2"
    try:
        theirs = os.stat(path)
        ours = os.fstat(2)
        if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
            return False  # the same stream: the reason is there already
        # A descriptor of our own on the same file, pipe or terminal: Meltano's is untouched.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        data = (line.rstrip("\n") + "\n").encode("utf-8", "backslashreplace")
        return os.write(fd, data) == len(data)
    except OSError:
        return False
    finally:
        os.close(fd)
