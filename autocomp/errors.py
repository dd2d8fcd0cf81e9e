"""The error types a run ends with, each printed by the CLI as one line.

``AutocompError``: the user's mistake, exit 2. ``StorageFault``: the disk or the study's storage
stopped taking writes (full, read-only, I/O error), exit 1, or 2 where the user pointed autocomp
at a place it may not write. ``storage_fault`` finds such a fault anywhere in an exception's chain:
a full disk surfaces from Optuna and SQLAlchemy as several chained exceptions (``disk I/O error``
-> ``StorageInternalError`` -> Optuna's own ``UnboundLocalError``), and the cause is at the bottom.
"""

from __future__ import annotations

import errno

# errno -> (what happened, exit code). A full disk or an I/O error is the machine's state (1);
# a read-only or forbidden place is where the user told autocomp to write (2).
_OS_FAULTS = {
    errno.ENOSPC: ("disk full", 1),
    errno.EDQUOT: ("disk quota exceeded", 1),
    errno.EIO: ("I/O error", 1),
    errno.EROFS: ("read-only file system", 2),
    errno.EACCES: ("permission denied", 2),
    errno.EPERM: ("operation not permitted", 2),
}
# Database drivers' errors that mean "the storage refused a write" (matched by name: this module
# imports nothing, and SQLAlchemy, sqlite3 and Optuna each wrap the one below).
_STORAGE_ERRORS = ("OperationalError", "StorageInternalError", "DatabaseError")
_RESUME = "finished trials are kept; run the same command again to resume"


class AutocompError(Exception):
    """A problem with the user's input (file, key, path, model, data), not a bug.

    The message is a single line that names what is wrong and where.
    """


class ArtifactError(AutocompError, ValueError):
    """A file given as an ``.acz`` artifact is not a valid one (docs/artifact.md says what is)."""


class TrialFailed(Exception):
    """A trial could not produce a valid artifact (NaN loss, export error, timeout)."""


class StorageFault(BaseException):  # noqa: N818 (a fault, like KeyboardInterrupt, not an error of the trial)
    """The disk or the study's storage stopped accepting writes: the run ends, in one line.

    A ``BaseException``, like ``KeyboardInterrupt``, on purpose: every trial boundary catches
    ``Exception`` and turns it into a failed trial so the study goes on, but with a full disk
    every later trial would fail the same way. This passes through them and ends the run; the
    trial in flight is failed with its reason on the next resume.
    ``exit_code`` is 1 for the machine's state, 2 for a place the user chose that refuses writes.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class DeviceLost(StorageFault):
    """The measuring device (``--measure-on``) stayed unreachable: the run ends in one line, like
    a full disk, since every later trial would fail the same way; finished trials are kept."""


def os_fault(exc: OSError, what: str | None = None) -> StorageFault | None:
    """A ``StorageFault`` naming the file and the fix, when ``exc`` is a full, read-only or
    forbidden place; None for any other ``OSError`` (a bug or a missing file is not a disk fault)."""
    if exc.errno not in _OS_FAULTS:
        return None
    cause, code = _OS_FAULTS[exc.errno]
    where = what or exc.filename or "a file"
    fix = "free space on that disk" if code == 1 else "make it writable, or choose another folder"
    return StorageFault(f"{cause} writing {where}: {fix}; {_RESUME}", code)


def storage_fault(exc: BaseException) -> StorageFault | None:
    """The ``StorageFault`` anywhere in ``exc``'s chain (``__cause__``/``__context__``), made from
    a disk ``OSError`` or a storage driver's write error when none was raised as one; else None."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not s for s in seen) and len(seen) < 50:
        seen.append(current)
        current = current.__cause__ or current.__context__
    for e in seen:  # a fault autocomp raised itself says the most: it names the file
        if isinstance(e, StorageFault):
            return e
    for e in reversed(seen):  # the deepest cause first: the outer ones only wrap it
        if isinstance(e, OSError) and (fault := os_fault(e)) is not None:
            return fault
    for e in reversed(seen):
        if type(e).__name__ in _STORAGE_ERRORS and _from_storage(e):
            detail = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            return StorageFault(f"the study's storage stopped accepting writes ({detail}): free space on its "
                                f"disk or make it writable; {_RESUME}")
    return None


def _from_storage(exc: BaseException) -> bool:
    module = type(exc).__module__.split(".")[0]
    return module in ("sqlalchemy", "sqlite3", "optuna", "psycopg2", "psycopg", "pymysql")
