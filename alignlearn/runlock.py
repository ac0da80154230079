"""One writer per run folder: an exclusive OS lock on RUN/.alignlearn.lock for the life of a training process.

The kernel releases the lock when its holder exits, however it dies, so a lock is never stale; the file
keeps the last holder's pid and host for the message a second writer gets.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from .errors import UserError

LOCK = ".alignlearn.lock"


class RunLock:
    def __init__(self):
        self._file = None

    def acquire(self, run_dir: Path) -> None:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            f = open(run_dir / LOCK, "a+")
        except OSError as e:
            raise UserError(f"cannot write to {run_dir}: {e.strerror or e}") from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise UserError(f"{run_dir} is in use by another alignlearn process ({holder}); wait for it to finish "
                            "or choose another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
