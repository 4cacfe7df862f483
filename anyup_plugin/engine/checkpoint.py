"""MMEngine checkpoints that load with ``torch.load(weights_only=True)``, so ``--resume`` works.

Since torch 2.6, ``torch.load`` refuses to unpickle anything but tensors, plain containers and a
short list of safe types unless ``weights_only=False`` is passed. MMEngine 0.10.7 saves a
:class:`~mmengine.logging.HistoryBuffer` per logged scalar in ``checkpoint['message_hub']``
(holding numpy arrays), numpy scalars in hook messages (e.g. a best score) and more, and loads
checkpoints with torch's default, so resuming its own checkpoints fails.

Two ways out were rejected: loading with ``weights_only=False`` (or allow-listing
``builtins.getattr``, numpy's reconstructors, ...) lets a checkpoint file run code, and that
path is also used for weights downloaded from elsewhere (``load_from``).

Instead, :class:`WeightsOnlyCheckpointHook` rewrites the *run's own* checkpoint just before it
is written: every ``HistoryBuffer``, numpy array, numpy scalar and numpy dtype becomes a small
tagged dict of tensors and Python scalars (types that ``weights_only=True`` accepts), and right
after loading a checkpoint the hook turns the tagged dicts back into the original objects.
Nothing is allow-listed: a checkpoint that still holds other objects is refused by torch as
before, and the hook warns at save time, naming the entry, when it sees such an object.

The conversion functions :func:`to_weights_only` and :func:`from_weights_only` are plain
functions, usable without a runner.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.registry import HOOKS

__all__ = [
    'TAG',
    'WeightsOnlyCheckpointHook',
    'find_resume_checkpoint',
    'from_weights_only',
    'is_complete_checkpoint',
    'to_weights_only',
    'unsafe_entries',
]

logger = logging.getLogger(__name__)

#: Key that marks a dict as a converted object. Its value names the original type.
TAG = '__anyup_weights_only__'

# Types that torch's weights-only unpickler accepts without allow-listing.
_SAFE_LEAVES = (
    torch.Tensor,
    torch.Size,
    torch.dtype,
    torch.device,
    str,
    bytes,
    int,
    float,
    complex,
    bool,
    type(None),
)


def _is_safe_leaf(obj: Any) -> bool:
    # numpy scalars subclass float/int/str but pickle as numpy objects.
    return isinstance(obj, _SAFE_LEAVES) and not isinstance(obj, np.generic)


def _ndarray_to_safe(arr: np.ndarray) -> dict[str, Any]:
    if arr.dtype.kind in 'biufc':
        try:
            tensor = torch.from_numpy(np.ascontiguousarray(arr).copy())
        except TypeError:  # a numeric dtype torch has no tensor type for
            tensor = None
        if tensor is not None:
            return {TAG: 'ndarray', 'dtype': arr.dtype.str, 'data': tensor}
    # Strings, objects, dates: keep the values (converted recursively) and the shape.
    return {
        TAG: 'ndarray_list',
        'dtype': arr.dtype.str,
        'shape': list(arr.shape),
        'data': to_weights_only(arr.ravel().tolist()),
    }


def to_weights_only(obj: Any) -> Any:
    """Returns a copy of ``obj`` that ``torch.load(weights_only=True)`` accepts.

    Dicts, lists and tuples are rebuilt (never modified in place); ``HistoryBuffer``, numpy
    arrays, numpy scalars and numpy dtypes become tagged dicts (see :data:`TAG`); everything
    else is returned as it is. :func:`from_weights_only` is the inverse.

    Args:
        obj: A checkpoint or any part of one.

    Returns:
        The converted object.
    """
    if _is_safe_leaf(obj):
        return obj
    if isinstance(obj, HistoryBuffer):
        log, count = obj.data
        return {
            TAG: 'HistoryBuffer',
            'log': _ndarray_to_safe(np.asarray(log)),
            'count': _ndarray_to_safe(np.asarray(count)),
            'max_length': int(obj.max_length),
        }
    if isinstance(obj, np.ndarray):
        return _ndarray_to_safe(obj)
    if isinstance(obj, np.generic):
        value = obj.item()
        if _is_safe_leaf(value):
            return {TAG: 'np_scalar', 'dtype': obj.dtype.str, 'value': value}
        return obj
    if isinstance(obj, np.dtype):
        return {TAG: 'np_dtype', 'value': obj.str}
    if isinstance(obj, OrderedDict):
        return OrderedDict((k, to_weights_only(v)) for k, v in obj.items())
    if type(obj) is dict:
        return {k: to_weights_only(v) for k, v in obj.items()}
    if type(obj) is list:
        return [to_weights_only(v) for v in obj]
    if type(obj) is tuple:
        return tuple(to_weights_only(v) for v in obj)
    return obj


def _restore_ndarray(entry: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(entry['dtype'])
    if entry[TAG] == 'ndarray':
        return entry['data'].numpy().astype(dtype, copy=True)
    values = from_weights_only(entry['data'])
    return np.array(values, dtype=dtype).reshape(entry['shape'])


def from_weights_only(obj: Any) -> Any:
    """Inverse of :func:`to_weights_only`: turns tagged dicts back into the original objects.

    Args:
        obj: A checkpoint (or part of one) as loaded from disk.

    Returns:
        The restored object; containers are rebuilt, other values returned as they are.
    """
    if isinstance(obj, dict) and isinstance(obj.get(TAG), str):
        kind = obj[TAG]
        if kind in ('ndarray', 'ndarray_list'):
            return _restore_ndarray(obj)
        if kind == 'HistoryBuffer':
            return HistoryBuffer(
                _restore_ndarray(obj['log']), _restore_ndarray(obj['count']), obj['max_length']
            )
        if kind == 'np_scalar':
            return np.array(obj['value'], dtype=np.dtype(obj['dtype']))[()]
        if kind == 'np_dtype':
            return np.dtype(obj['value'])
        raise ValueError(f'unknown converted checkpoint entry {kind!r}')
    if isinstance(obj, OrderedDict):
        return OrderedDict((k, from_weights_only(v)) for k, v in obj.items())
    if type(obj) is dict:
        return {k: from_weights_only(v) for k, v in obj.items()}
    if type(obj) is list:
        return [from_weights_only(v) for v in obj]
    if type(obj) is tuple:
        return tuple(from_weights_only(v) for v in obj)
    return obj


def unsafe_entries(obj: Any, path: str = 'checkpoint', limit: int = 20) -> list[str]:
    """Lists entries of ``obj`` that ``torch.load(weights_only=True)`` would refuse.

    A conservative static check (the real test is loading the file): anything that is not a
    tensor, a plain container or a builtin scalar counts as unsafe.

    Args:
        obj: A (converted) checkpoint.
        path: Name of ``obj`` in the messages.
        limit: Stop after this many findings.

    Returns:
        ``'<path>: <type>'`` for each unsafe entry found, at most ``limit``.
    """
    found: list[str] = []

    def visit(value: Any, where: str) -> None:
        if len(found) >= limit or _is_safe_leaf(value):
            return
        if type(value) in (dict, OrderedDict):
            for key, item in value.items():
                if not isinstance(key, (str, int, float, bool, type(None))):
                    found.append(f'{where} (key of type {type(key).__qualname__})')
                visit(item, f'{where}.{key}')
        elif type(value) in (list, tuple):
            for i, item in enumerate(value):
                visit(item, f'{where}[{i}]')
        else:
            found.append(f'{where}: {type(value).__module__}.{type(value).__qualname__}')

    visit(obj, path)
    return found


@HOOKS.register_module()
class WeightsOnlyCheckpointHook(Hook):
    """Makes the run's own checkpoints loadable with ``torch.load(weights_only=True)``.

    ``before_save_checkpoint`` converts the checkpoint with :func:`to_weights_only` (and warns,
    naming the entries, if anything unsafe is left); ``after_load_checkpoint`` restores it with
    :func:`from_weights_only` before the runner reads the message hub. Checkpoints written
    without this hook are still refused by ``weights_only=True`` loading, as torch intends.

    It is registered in MMEngine's root ``HOOKS`` registry, so configs of any scope
    (``anyup_plugin``, ``mmseg``) can use ``dict(type='WeightsOnlyCheckpointHook')``;
    ``tools/train.py`` and ``tools/test.py`` add it to every run. Its priority is
    ``'VERY_LOW'`` so that it converts what other hooks added to the checkpoint; hooks that
    read checkpoints after loading see tensors unchanged (only numpy objects and history
    buffers are restored by this hook).
    """

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self._warned = False

    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        """Converts ``checkpoint`` in place (its top-level entries are replaced)."""
        for key in list(checkpoint):
            checkpoint[key] = to_weights_only(checkpoint[key])
        leftovers = unsafe_entries(checkpoint)
        if leftovers and not self._warned:
            self._warned = True
            runner.logger.warning(
                'This checkpoint holds objects that torch.load(weights_only=True) refuses, so '
                '--resume will refuse it: %s',
                '; '.join(leftovers),
            )

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        """Restores the objects converted at save time, in place."""
        for key in list(checkpoint):
            checkpoint[key] = from_weights_only(checkpoint[key])


def is_complete_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a complete ``torch.save`` zip archive (not cut short by a kill).

    Reads only the zip's central directory at the end of the file, so it is cheap.

    Args:
        path: Checkpoint file.

    Returns:
        True if the file exists and its zip directory is readable and lists a ``data.pkl``.
    """
    try:
        with zipfile.ZipFile(os.fspath(path)) as archive:
            return any(
                name.endswith('/data.pkl') or name == 'data.pkl' for name in archive.namelist()
            )
    except (OSError, zipfile.BadZipFile):
        return False


_CKPT_NAME = re.compile(r'^(iter|epoch)_(\d+)\.pth$')


def find_resume_checkpoint(work_dir: str | os.PathLike[str]) -> str | None:
    """Finds the checkpoint a run in ``work_dir`` should resume from.

    MMEngine records the latest checkpoint in ``work_dir/last_checkpoint``. A run killed at
    the wrong moment can leave that record empty or pointing at a half-written file, so this
    falls back to the newest complete ``iter_*.pth`` / ``epoch_*.pth`` in ``work_dir``.

    Args:
        work_dir: The run's work directory.

    Returns:
        The checkpoint path, or None when there is no usable checkpoint.
    """
    work_dir = os.fspath(work_dir)
    record = os.path.join(work_dir, 'last_checkpoint')
    if os.path.isfile(record):
        with open(record, encoding='utf-8') as f:
            recorded = f.read().strip()
        if recorded and is_complete_checkpoint(recorded):
            return recorded
        logger.warning(
            '%s names %r, which is missing or incomplete; looking for the newest complete '
            'checkpoint in %s instead',
            record,
            recorded,
            work_dir,
        )
    if not os.path.isdir(work_dir):
        return None
    candidates = []
    for name in os.listdir(work_dir):
        match = _CKPT_NAME.match(name)
        if match:
            candidates.append((int(match.group(2)), os.path.join(work_dir, name)))
    for _, path in sorted(candidates, reverse=True):
        if is_complete_checkpoint(path):
            return path
        logger.warning('skipping incomplete checkpoint %s', path)
    return None
