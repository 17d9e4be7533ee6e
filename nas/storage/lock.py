"""One run, one driver: an exclusive OS lock on the run directory, and who holds it.

    <run>/driver.lock   empty; the lock itself (``flock``), held by the driver for as long as it runs
    <run>/driver.json   the owner: pid, host, since, command; on a clean end also ``ended`` and ``outcome``

The lock is the kernel's: it dies with its process, so ``kill -9`` or a crash never leaves a stale lock behind,
and nothing here reads clocks or pids to guess whether a driver still lives. A reader (``nas runs``,
``nas status``) asks the kernel the same question by trying the lock without waiting (``driver_state``).

What it guarantees where (``flock(2)``):

- a local disk: exactly one driver per run on the machine;
- NFS (the shared storage of a Ray cluster, a KubeRay ReadWriteMany volume on EFS/Filestore/NFS): Linux NFS
  clients turn ``flock`` into an NFS byte-range lock the server arbitrates, so one driver per run across every
  machine mounting the storage, unless it is mounted ``nolock`` or ``local_lock=flock``/``all`` (then only per
  machine). If a machine holding the lock dies, the server frees it when that client's lease ends (NFSv4: about
  90 s; NFSv3: when the client reboots and its lock daemon says so); until then the run reads as in use;
- Lustre (Slurm scratch): across nodes only when mounted with ``-o flock``; ``localflock`` is per node; without
  either, locks are refused: the driver then says so once and runs without a lock.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from nas.errors import NasError, RunError, StorageError
from nas.storage.layout import LOCK, OWNER
from nas.storage.store import read_json, write_json

FILES = (LOCK, OWNER)
#: a reader probing the lock holds it for microseconds; a new driver retries this long before it gives up
RETRY_S = 1.0
#: a file system that refuses locks (Lustre without -o flock, some FUSE mounts)
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def when(ts: float | None) -> str:
    return _dt.datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M:%S") if ts else "an unknown time"


def in_use(name: str, owner: dict[str, Any] | None) -> str:
    o = owner or {}
    return (f"run {name!r} is in use by process {o.get('pid', '?')} on {o.get('host', '?')} since "
            f"{when(o.get('since'))}; wait for it or stop it")


class RunLock:
    """The exclusive lock of one run directory, held from ``acquire`` to ``release`` (or the process's end)."""

    def __init__(self, root: Path, name: str | None = None) -> None:
        self.root = Path(root)
        self.name = name or self.root.name
        self.fd: int | None = None
        self.owner: dict[str, Any] = {}
        self.unsupported: str | None = None  # why the storage refused a lock (the driver runs without one)
        self.outcome: str | None = None  # how the driver ended: finished | stopped | interrupted | error
        self.previous: dict[str, Any] = {}  # the last driver's record, put back when this one is refused

    @property
    def path(self) -> Path:
        return self.root / LOCK

    def acquire(self) -> "RunLock":
        """Take the lock or raise ``RunError`` naming the driver that holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + RETRY_S
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise RunError(in_use(self.name, read_owner(self.root))) from None
            except OSError as e:
                if e.errno not in _UNSUPPORTED:
                    os.close(fd)
                    raise
                self.unsupported = f"{self.root.parent} does not support file locks ({e.strerror})"
            # the file may have been removed (and another made) between our open and our lock: lock that one
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.fd = fd
        self.previous = read_owner(self.root)
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                      "command": " ".join(sys.argv)}
        try:
            write_json(self.root / OWNER, self.owner)
        except BaseException:  # e.g. a full storage: let go at once
            self.fd = None
            os.close(fd)
            raise
        return self

    def release(self, outcome: str | None = None, remove: bool = False, restore: bool = False) -> None:
        """Say how the driver ended (``outcome``) and let go; ``remove``: also delete both files (a new run that
        failed before writing anything); ``restore``: put the previous driver's record back (this one was
        refused before it changed anything)."""
        if self.fd is None:
            return
        try:
            if restore and self.previous:
                write_json(self.root / OWNER, self.previous)
            elif remove:
                for name in FILES:  # while still holding it (see the inode check in ``acquire``)
                    (self.root / name).unlink(missing_ok=True)
            elif outcome:
                write_json(self.root / OWNER, {**self.owner, "ended": time.time(), "outcome": outcome})
        except OSError:  # full or read-only storage: the kernel's lock still goes; a reader sees no live driver
            pass
        finally:
            os.close(self.fd)  # releases the lock
            self.fd = None

    def done(self, result: Any) -> Any:
        """Note how a search ended (a ``SearchResult``: interrupted, stopped early, or finished); returns it."""
        self.outcome = "interrupted" if result.interrupted else "stopped" if result.stopped else "finished"
        return result


def read_owner(root: Path) -> dict[str, Any]:
    """What ``driver.json`` says ({} when there is none or it cannot be read)."""
    try:
        data = read_json(Path(root) / OWNER)
        return data if isinstance(data, dict) else {}
    except (RunError, OSError):
        return {}


def driver_state(root: Path) -> dict[str, Any]:
    """The run's last (or current) driver as ``driver.json`` records it, plus ``live``: whether a driver holds
    the run's lock now. Asks the kernel (the lock), not clocks. For readers only, never the driver itself: on
    NFS, where flock is a POSIX lock, closing any descriptor of the file drops the whole process's lock."""
    path = Path(root) / LOCK
    owner = read_owner(root)
    if not path.is_file():
        return {**owner, "live": False}
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return {**owner, "live": False}
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        live = False
    except BlockingIOError:
        live = True
    except OSError:  # no locks on this file system: nothing can be known from it
        live = False
    finally:
        os.close(fd)  # also releases the probe
    if live:
        owner = read_owner(root)  # written just after the lock was taken
    return {**owner, "live": live}


@contextlib.contextmanager
def owning(root: Path, name: str, announce: Callable[[str], None],
           fresh: Callable[[], bool] = lambda: False) -> Iterator[RunLock]:
    """Hold the run's lock for the ``with`` block (the driver's whole life), telling the user once when the
    storage cannot lock. ``fresh()`` true when the block fails: a new run that wrote nothing yet, whose lock
    files and (then empty) directory are removed, leaving no trace of the attempt; a driver refused for bad
    input puts the previous driver's record back."""
    lock = RunLock(root, name).acquire()
    if lock.unsupported:
        announce(f"warning: {lock.unsupported}; nothing stops a second driver on run {name!r}")
    try:
        yield lock
    except BaseException as e:
        if fresh():
            lock.release(remove=True)
            with contextlib.suppress(OSError):
                Path(root).rmdir()  # only if empty
        elif isinstance(e, NasError) and not isinstance(e, StorageError):  # refused: the run is as it was
            lock.release(restore=True)
        else:
            lock.release("interrupted" if isinstance(e, KeyboardInterrupt) else "error")
        raise
    lock.release(lock.outcome or "finished")
