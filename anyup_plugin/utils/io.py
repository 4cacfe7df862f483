"""File writing that never leaves a half-written file under the final name."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

__all__ = ['atomic_write']


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, suffix: str = '.tmp') -> Iterator[str]:
    """Yields a temporary path beside ``path``; renames it to ``path`` if the block succeeds.

    The temporary file lives in the destination folder (created if needed), so the final
    ``os.replace`` is atomic on POSIX file systems: a process killed mid-write leaves either
    the old file or the new one, never a truncated file. If the block raises, the temporary
    file is removed and ``path`` is left untouched.

    Args:
        path: Final file.
        suffix: Suffix of the temporary file (some writers pick the format from it, e.g.
            ``'.png'`` for PIL).

    Yields:
        The temporary file path to write to.

    Example:
        >>> with atomic_write('out/weights.pth', suffix='.pth') as tmp:
        ...     torch.save(state, tmp)
    """
    final = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(final))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(final)}.', suffix=suffix, dir=folder)
    os.close(fd)
    # mkstemp makes the file private (0600); give it the permissions open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
