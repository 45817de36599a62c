"""Files and folders the programs write: checked before Spark starts."""
import os
from pathlib import Path
from urllib.parse import urlparse

from chap_mop.errors import InputError

PROBE_NAME = ".chap_mop_write_check.partial"


def local_path(url: str | Path) -> str | None:
    """The local (or shared, NFS) file system path of a plain path or ``file://`` URL; None for a
    remote URL such as ``hdfs://``."""
    parsed = urlparse(str(url))
    if parsed.scheme not in ("", "file"):
        return None
    return parsed.path if parsed.scheme == "file" else str(url)


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
