"""The run's directory: checks before it is written, atomic file writes, OS errors in one line.

Every operating-system error a run can meet on its workdir (no permission, a
read-only disk, no space, a path that is a file) ends in a :class:`WorkdirError`
whose message names the path and the fix, instead of a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import re
from typing import Any, Optional


class WorkdirError(OSError):
    """An OS error on the workdir, as one line naming the path and what to do."""


def check_workdir(workdir: str) -> None:
    """``ValueError`` if ``workdir``, or the nearest part of it that exists, is not a directory."""
    path = os.path.abspath(workdir)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent
    if not os.path.isdir(path):
        what = "--workdir" if path == os.path.abspath(workdir) else f"{path}, a part of --workdir {workdir},"
        raise ValueError(
            f"{what} is a file, not a directory; pass a directory path for --workdir "
            "(it is created if missing)"
        )


_FIXES = {
    errno.EACCES: "no permission to write {path}; fix its permissions or pass a --workdir you can write to",
    errno.EPERM: "no permission to write {path}; fix its permissions or pass a --workdir you can write to",
    errno.EROFS: "{path} is on a read-only file system; pass a --workdir on a writable disk",
    errno.ENOSPC: "no space left on the disk holding {path}; free some space or pass a --workdir on "
                  "another disk",
    errno.EDQUOT: "disk quota exceeded writing {path}; free some space or pass a --workdir on another disk",
    errno.ENOTDIR: "a part of {path} is a file, not a directory; pass another --workdir",
    errno.EISDIR: "{path} is a directory where a file was expected; move it away or pass another --workdir",
}
_MESSAGES = (  # errors that libraries (TensorStore) report as text, not as an errno
    ("permission denied", errno.EACCES), ("read-only file system", errno.EROFS),
    ("no space left", errno.ENOSPC), ("quota exceeded", errno.EDQUOT),
)


def os_error(error: BaseException, workdir: str) -> Optional[WorkdirError]:
    """The :class:`WorkdirError` for ``error`` (or one it wraps), ``None`` if it is no OS error."""
    if isinstance(error, WorkdirError):
        return error
    seen, cause = set(), error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno is not None:
            return WorkdirError(_describe(cause.errno, cause.filename, cause.strerror, workdir))
        text = str(cause).lower()
        for phrase, code in _MESSAGES:
            if phrase in text:
                return WorkdirError(_describe(code, _path_in(str(cause), workdir), None, workdir))
        cause = cause.__cause__ or cause.__context__
    return None


def _path_in(text: str, workdir: str) -> Optional[str]:
    match = re.search(re.escape(os.path.abspath(workdir)) + r"[^\s\"':,]*", text)
    return match.group(0) if match else None


def _describe(code: int, filename, strerror, workdir: str) -> str:
    path = os.fspath(filename) if filename else os.path.abspath(workdir)
    fix = _FIXES.get(code)
    if fix is None:
        reason = strerror or os.strerror(code)
        return f"cannot write {path} ({reason}); check the disk and the path, or pass another --workdir"
    return fix.format(path=path)


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically: readers see the old file or the new one, never a part."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: str, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` atomically."""
    write_text(path, json.dumps(value, indent=1))
