"""One run per output directory: a lock file naming its holder.

```python
with RunLock("/runs/clip"):   # refuses while another live run holds it
    train()
```

Two runs writing the same directory at once would interleave their
backups, logs and presets. `RunLock` takes an exclusive `fcntl.flock` on
``<directory>/run.lock`` and writes the holder's host, PID and start time
into it. The kernel releases a `flock` when its process dies however it
dies (SIGKILL included), so a lock file left by a dead run is stale: the
next run takes it over (and says so) instead of being refused. A live
holder is refused with a `RunLockedError` naming it.

`flock` is local to one machine on most network file systems; runs on
different hosts writing one shared directory are only told apart by the
host written in the file, not stopped. Give each job its own directory.
"""

import json
import os
import socket
import time

__all__ = ["RunLock", "RunLockedError"]

LOCK_NAME = "run.lock"


class RunLockedError(RuntimeError):
    """Another live process holds the directory's lock."""


def _describe(path):
    try:
        with open(path) as f:
            holder = json.loads(f.read() or "{}")
    except (OSError, ValueError):
        return "another process"
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)) if started else "?"
    return f"PID {holder.get('pid')} on {holder.get('host')} (since {when})"


class RunLock:
    """An exclusive lock on a run's output directory, held until `release()`.

    Args:
        directory: str, the run's output directory (created if missing).
        what: str, how the directory is named in messages (e.g. a flag).
            Defaults to the directory itself.

    Attributes:
        path: the lock file.
        took_over: a description of the dead holder whose stale lock was
            taken over, else `None`.

    Raises:
        RunLockedError: on `acquire()` while a live process holds it.

    Example:
    >>> import tempfile
    >>> with RunLock(tempfile.mkdtemp()) as lock:
    ...     os.path.basename(lock.path)
    'run.lock'
    """

    def __init__(self, directory, what=None):
        self.directory = str(directory)
        self.what = what or self.directory
        self.path = os.path.join(self.directory, LOCK_NAME)
        self.took_over = None
        self._fd = None

    def acquire(self):
        import fcntl

        os.makedirs(self.directory, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise RunLockedError(
                    f"{self.what} is in use by another run ({_describe(self.path)}); two runs "
                    "writing one folder would corrupt each other's backups and presets. Wait for "
                    "it to end, or give this run another output folder."
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            # The holder removed the file as we opened it: lock the new one.
            os.close(fd)
        if os.fstat(fd).st_size:
            # A holder that ended normally removes the file: this one died.
            self.took_over = _describe(self.path)
        os.ftruncate(fd, 0)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.write(fd, json.dumps(holder).encode("utf-8"))
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self):
        """Drop the lock and remove the file (idempotent)."""
        if self._fd is None:
            return
        import fcntl

        try:
            os.remove(self.path)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
