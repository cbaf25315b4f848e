"""One JSON record per run, written atomically; reading tells done / failed / stale / corrupt."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


class CorruptRecord(ValueError):
    pass


def _new_file_mode() -> int:
    """The mode open() gives a new file: 0o666 less the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, then rename over the target: a reader sees
    the old file or the new, never half of one. The file gets the usual umask-based mode, not
    mkstemp's owner-only 0o600, so that others sharing a results folder can read it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _new_file_mode())
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True))


def read_record(path: Path) -> dict:
    try:
        record = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptRecord(f"{path}: corrupt record ({err})") from None
    if not isinstance(record, dict) or "status" not in record or "config_hash" not in record:
        raise CorruptRecord(f"{path}: corrupt record (missing fields)")
    return record


def record_state(path: Path, config_hash: str) -> str:
    """'missing', 'corrupt', 'stale' (made with another config), 'failed' or 'done'."""
    if not Path(path).exists():
        return "missing"
    try:
        record = read_record(path)
    except CorruptRecord:
        return "corrupt"
    if record["config_hash"] != config_hash:
        return "stale"
    return "done" if record["status"] == "ok" else "failed"


def set_aside(path: Path, reason: str) -> Path:
    """Keep an unusable record next to where it was (nothing computed is ever deleted)."""
    path = Path(path)
    n = 0
    while (target := path.with_name(f"{path.name}.{reason}{n or ''}")).exists():
        n += 1
    os.replace(path, target)
    return target

