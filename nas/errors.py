"""User-facing errors.

Every error a user can cause (bad flag, bad data, unknown plugin, missing run) is a ``NasError``: the CLI prints
its message on one line and exits non-zero, without a traceback (``--debug`` shows it).
"""

from __future__ import annotations

import errno

#: what a full, read-only or over-quota storage raises (EFBIG: a file-size limit, as a full disk does for one file)
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EFBIG, errno.EDQUOT})


class NasError(Exception):
    """An error caused by the user's input; its message names the bad value and what is accepted."""

    exit_code = 2


class DataError(NasError):
    """The data set cannot be loaded or does not fit the task or the search space."""


class PluginError(NasError):
    """A search space or strategy cannot be found, loaded or configured."""


class RunError(NasError):
    """A stored search is missing, incomplete or contradicts the arguments given."""


class ResourceError(NasError):
    """Ray can never satisfy the resources asked for."""


class StorageError(NasError):
    """The storage cannot hold runs: not a directory, not writable, full, or read-only."""
