"""atomic_write: the destination holds the old file or the complete new one, never a part."""

from __future__ import annotations

import os

import pytest

from anyup_plugin.utils.io import atomic_write


def test_writes_and_renames_into_place(tmp_path):
    path = tmp_path / 'sub' / 'out.txt'  # folder created
    with atomic_write(path) as tmp:
        assert os.path.dirname(tmp) == str(path.parent) and not path.exists()
        with open(tmp, 'w') as f:
            f.write('new')
    assert path.read_text() == 'new'
    assert sorted(p.name for p in path.parent.iterdir()) == ['out.txt']


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / 'out.txt'
    path.write_text('old')
    with pytest.raises(RuntimeError, match='disk full'):
        with atomic_write(path) as tmp:
            with open(tmp, 'w') as f:
                f.write('partial')
            raise RuntimeError('disk full')
    assert path.read_text() == 'old'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.txt']


def test_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / 'out.bin') as tmp:
            open(tmp, 'wb').close()
    finally:
        os.umask(old)
    assert (tmp_path / 'out.bin').stat().st_mode & 0o777 == 0o644
