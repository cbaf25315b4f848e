"""The errors a user can act on. `benchmark.cli.main` catches them in one place and prints
`error: <message>` (one line, no traceback), exiting with the error's `exit_code`:

- 2: the command or what it names must change (options, profile, spec, data files, plugins);
- 1: the machine cannot do it now (results folder not writable, disk full, Slurm not answering);
  the same command works once that is fixed.

Any exception class may join by subclassing `InputError` (with a builtin base as well where callers
catch that, e.g. `DatasetMissing(InputError, FileNotFoundError)`). Filesystem errors raised while
writing results (`OSError` with an errno) are turned into one line by `describe_os_error`.
"""

from __future__ import annotations

import errno
import re


class InputError(Exception):
    """Bad input or an unusable environment, said in one line that names the thing and the fix."""

    exit_code = 2

    def __str__(self) -> str:
        return one_line(str(self.args[0]) if self.args else type(self).__name__)


class UsageError(InputError):
    """A command-line value that cannot work (unknown table, dims, device, methods...)."""


class Unavailable(InputError):
    """The environment cannot do it now (disk full, read-only folder, no Slurm controller)."""

    exit_code = 1


def one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text.strip())


# what to do about a filesystem error, by errno
_OS_HINTS = {
    errno.ENOSPC: "free some space or choose another --results-dir, then rerun (finished runs are "
                  "kept)",
    errno.EDQUOT: "free some space or choose another --results-dir, then rerun (finished runs are "
                  "kept)",
    errno.EROFS: "choose a writable --results-dir",
    errno.EACCES: "make it writable (chmod u+w) or choose another --results-dir",
    errno.EPERM: "make it writable (chmod u+w) or choose another --results-dir",
    errno.ENOTDIR: "a file is in the way of a folder: move it away or choose another --results-dir",
    errno.EISDIR: "a folder is where a file should be: move it away, then rerun",
    errno.EEXIST: "something is in the way: move it away, then rerun",
}


# filesystem errors that say the results folder cannot take more (not that a method failed): a run
# hitting one stops the sweep with one line instead of being recorded as failed
ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def environment_failure(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in ENVIRONMENT_ERRNOS


def describe_os_error(err: OSError) -> str:
    """'<path>: <what went wrong>: <what to do>' for an OSError from reading or writing results."""
    where = err.filename if err.filename is not None else ""
    if getattr(err, "filename2", None):
        where = f"{where} -> {err.filename2}"
    what = err.strerror or type(err).__name__
    hint = _OS_HINTS.get(err.errno, "check the path and its permissions, then rerun")
    return one_line(f"{where}: {what}: {hint}" if where else f"{what}: {hint}")
