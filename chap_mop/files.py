"""Files and folders the programs write: checked before Spark starts, and locked while written."""
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from chap_mop.errors import InputError

PROBE_NAME = ".chap_mop_write_check.partial"
LOCK_NAME = ".chap_mop.lock"  # held by the process that writes the folder (host, process id, start time)


def local_path(url: str | Path) -> str | None:
    """The local (or shared, NFS) file system path of a plain path or ``file://`` URL; None for a
    remote URL such as ``hdfs://``."""
    parsed = urlparse(str(url))
    if parsed.scheme not in ("", "file"):
        return None
    return parsed.path if parsed.scheme == "file" else str(url)


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of the file at ``path``, hex, read in 1 MiB pieces."""
    sha = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def check_writable(folder: str | Path, what: str) -> None:
    """Make sure files can be written in ``folder`` (or, while it is missing, in the folder that would
    hold it); nothing is left behind. ``hdfs://`` and other remote URLs are left to Spark.

    :param what: how the message names the folder, e.g. ``"results folder"``.
    :raises InputError: it cannot be written, in one line naming it and why.
    """
    path = local_path(folder)
    if path is None:
        return
    wanted = Path(path).absolute()
    existing = wanted
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    probe = existing / PROBE_NAME
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "not a folder", str(existing))
        probe.write_bytes(b"")
        os.unlink(probe)
    except OSError as error:
        raise InputError(f"{what} {wanted} cannot be written ({error.strerror or error} in {existing}); choose a "
                         "writable folder") from error


@contextlib.contextmanager
def folder_lock(folder: Path, what: str, error: type[InputError] = InputError) -> Iterator[None]:
    """Hold ``<folder>/.chap_mop.lock`` while this process writes ``folder``; a second is refused in one line.

    The lock is the operating system's (``flock``) on that file, so the kernel releases it however
    the holder ends (SIGKILL included), and two processes can never both take it. The file also
    says who holds it (host, process id, start time) for the message. A file left by a process that
    is gone is taken over with a warning, unless it names another host: whether that one still runs
    is never guessed at. A folder this creates is removed again if nothing else was written in it.

    :param what: how the messages name the folder and its writer, e.g. ``"results folder"``.
    :raises error: another process holds the lock, or a file of another host's process names it.
    """
    path = folder / LOCK_NAME
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    mine = {"host": socket.gethostname(), "pid": os.getpid(),
            "started": datetime.datetime.now().isoformat(timespec="seconds")}
    handle = _take_lock(path, mine, what, error)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still holding the lock: a waiting process then checks the file it locked
        handle.close()
        with contextlib.suppress(OSError):
            if created and not any(folder.iterdir()):
                folder.rmdir()  # refused before it wrote anything: leave no folder behind


def _take_lock(path: Path, mine: dict, what: str, error: type[InputError]):
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held = _holder(handle)
            handle.close()
            raise _in_use(path, held, what, error) from None
        try:
            current = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        handle.close()  # its holder removed the file between our open and our lock: take the new one
    held = _holder(handle)
    if held and held.get("host") != mine["host"]:
        handle.close()
        raise _in_use(path, held, what, error)
    if held:
        print(f"warning: taking over {path}: its process ({held.get('pid')}, since {held.get('started')}) is gone")
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(mine) + "\n")
    handle.flush()
    return handle


def _holder(handle) -> dict:
    handle.seek(0)
    try:
        held = json.loads(handle.read() or "{}")
    except ValueError:
        return {}
    return held if isinstance(held, dict) else {}


def _in_use(path: Path, held: dict, what: str, error: type[InputError]) -> InputError:
    return error(f"{what} {path.parent} is in use by another process (host {held.get('host')}, process "
                 f"{held.get('pid')}, since {held.get('started')}): wait for it to end, or remove {path} if it is gone")
