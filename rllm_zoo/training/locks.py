"""Lock files that let several processes, on one host or many, share one folder of runs.

A sweep started twice (or on two machines with a shared disk) splits its grid this way: each
run is trained by whoever claims its lock; a crashed holder's lock goes stale and is taken over.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.seed0.lock"
    >>> lock = claim_lock(path, what="a/seed0")
    >>> claim_lock(path) is None        # held by a live process: this one
    True
    >>> lock.release(); claim_lock(path) is not None
    True
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["HEARTBEAT_S", "RunLock", "claim_lock", "lock_stale", "read_lock", "wait_for_lock"]

#: how often a holder touches its lock file; a sweep's ``stale_after`` is at least 3 beats
HEARTBEAT_S = 30.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, as another user's
        return True
    return True


def read_lock(path: str | os.PathLike) -> dict[str, Any] | None:
    """The holder recorded in a lock file (``None`` when absent, empty or unreadable)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def lock_stale(path: Path, holder: dict[str, Any] | None, stale_after: float) -> bool:
    """Whether ``holder``'s lock at ``path`` may be taken over: no heartbeat for ``stale_after``
    seconds (any host), or its process is gone (this host)."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False  # gone: not ours to take over, the caller retries the create
    if age > stale_after:
        return True  # no heartbeat for that long: a dead or frozen process, on any host
    if holder is None:
        return False  # being written right now
    pid = holder.get("pid")
    return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid)


class RunLock:
    """A claimed lock file; :meth:`release` removes it (only while it is still this holder's).

    While held, a heartbeat thread touches the file every 30 s, so other processes on other hosts
    can tell a live holder from a dead one (see ``stale_after`` of :func:`claim_lock`).
    """

    def __init__(self, path: Path, token: str) -> None:
        self.path = path
        self.token = token
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start_heartbeat(self, interval: float = HEARTBEAT_S) -> RunLock:
        def beat() -> None:
            while not self._stop.wait(interval):
                holder = read_lock(self.path)
                if holder is not None and holder.get("token") != self.token:
                    return  # taken over: not ours to keep alive
                if holder is None and not self.path.exists():
                    return  # released or removed
                try:
                    os.utime(self.path)
                except FileNotFoundError:
                    return
                except OSError:
                    continue  # a transient failure (e.g. a network file system): try at the next beat

        self._thread = threading.Thread(target=beat, name=f"heartbeat {self.path.name}", daemon=True)
        self._thread.start()
        return self

    def held(self) -> bool:
        holder = read_lock(self.path)
        return holder is not None and holder.get("token") == self.token

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.held():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _create_lock(path: Path, what: str) -> RunLock | None:
    token = uuid.uuid4().hex
    content = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "token": token,
        "run": what,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    try:
        os.write(fd, (json.dumps(content) + "\n").encode())
    finally:
        os.close(fd)
    return RunLock(path, token)


def claim_lock(path: str | os.PathLike, stale_after: float = 600.0, what: str = "") -> RunLock | None:
    """Claim a lock file atomically; ``None`` while another live process holds it.

    The file is created with ``O_CREAT | O_EXCL`` (exactly one creator wins, also on NFS v3+) and
    holds JSON: ``pid``, ``host``, ``token`` (random), ``run`` and ``created``. A lock is stale, and
    taken over, when its ``pid`` is dead on this host or its mtime (the heartbeat) is older than
    ``stale_after`` seconds. Takeover is serialised by a ``<lock>.takeover`` file (also
    ``O_EXCL``), and the stale lock is removed only if it still holds the same token, so two
    processes never both take over one lock.

    Example:
        >>> lock = claim_lock("runs/sweep/locks/baseline.seed0.lock")       # doctest: +SKIP
        >>> if lock is not None:                                             # doctest: +SKIP
        ...     with lock.start_heartbeat():
        ...         train()
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        lock = _create_lock(path, what)
        if lock is not None:
            return lock
        holder = read_lock(path)
        if not path.exists():
            continue  # released between our create and read: try again
        if not lock_stale(path, holder, stale_after):
            return None
        guard = path.with_name(path.name + ".takeover")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:  # a takeover left behind by a process that died in the middle of it
                if time.time() - guard.stat().st_mtime > 60:
                    guard.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            return None
        os.close(fd)
        try:
            if read_lock(path) != holder or not lock_stale(path, holder, stale_after):
                return None  # someone else took it over (or it came back to life)
            path.unlink(missing_ok=True)
            return _create_lock(path, what)
        finally:
            guard.unlink(missing_ok=True)
    return None


def wait_for_lock(path: Path, stale_after: float, timeout: float = 120.0, what: str = "") -> RunLock | None:
    """:func:`claim_lock`, retried until ``timeout`` seconds have passed (then ``None``)."""
    deadline = time.monotonic() + timeout
    while True:
        lock = claim_lock(path, stale_after, what=what)
        if lock is not None or time.monotonic() > deadline:
            return lock
        time.sleep(0.2)
