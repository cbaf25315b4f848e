"""The atomic writer behind every record, table and page."""

import os
import stat

import pytest

from benchmark.store import write_json_atomic, write_text_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_written_file_has_the_umask_mode_not_mkstemps_owner_only(tmp_path, umask_022):
    path = tmp_path / "runs" / "s0-r0.json"
    write_json_atomic(path, {"status": "ok"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by others sharing the folder
    assert path.read_text() == '{\n "status": "ok"\n}'


def test_replacing_leaves_no_temp_file_and_a_failed_write_keeps_the_old(tmp_path):
    path = tmp_path / "table1.md"
    write_text_atomic(path, "old")
    write_text_atomic(path, "new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["table1.md"]
    with pytest.raises(TypeError):
        write_text_atomic(path, None)  # fails inside the write, after the temp file exists
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["table1.md"]
