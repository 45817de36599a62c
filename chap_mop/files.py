"""Files and folders the programs write: checked before Spark starts."""
import os
from pathlib import Path
from urllib.parse import urlparse

from chap_mop.errors import InputError

PROBE_NAME = ".chap_mop_write_check.partial"


def check_writable(folder: str | Path, what: str) -> None:
    """Make sure files can be written in ``folder`` (or, while it is missing, in the folder that would
    hold it); nothing is left behind. ``hdfs://`` and other remote URLs are left to Spark.

    :param what: how the message names the folder, e.g. ``"results folder"``.
    :raises InputError: it cannot be written, in one line naming it and why.
    """
    parsed = urlparse(str(folder))
    if parsed.scheme not in ("", "file"):
        return
    wanted = Path(parsed.path if parsed.scheme == "file" else str(folder)).absolute()
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
