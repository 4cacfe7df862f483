"""Checkpoint files and the models they load into: one message for each way that fails.

Every weights loader of the package goes through here: ``AnyUp.from_pretrained`` (via
:mod:`~anyup_plugin.core.hub`) and :class:`~anyup_plugin.core.encoder.FrozenTimmEncoder`'s
``checkpoint`` (and so both adapters' timm backbones). A user therefore gets the same message
whichever entry point they used:

* a file that is not there: ``FileNotFoundError`` naming the file and where to get it
  (:func:`read_checkpoint`);
* a file that is there but cannot be read (truncated download, a text or HTML page saved under
  the checkpoint's name, another format): :class:`CheckpointReadError` naming the file and
  what a valid one is, chained to the reader's own error (:func:`read_checkpoint`);
* weights whose keys or shapes do not fit the model: :class:`CheckpointMismatchError` naming
  every missing, unexpected and mis-shaped key (:func:`check_state_dict_fits`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import Tensor

__all__ = [
    'CheckpointMismatchError',
    'CheckpointReadError',
    'StateDictMismatch',
    'check_state_dict_fits',
    'read_checkpoint',
    'state_dict_mismatch',
]

# Keys listed per kind in a mismatch message; a checkpoint of another architecture mismatches
# in hundreds of keys, and the first ones say enough.
MAX_KEYS_IN_ERROR = 10

T = TypeVar('T')


class CheckpointReadError(ValueError):
    """A checkpoint file exists but could not be read as one (truncated, corrupt, not weights)."""


class CheckpointMismatchError(ValueError, RuntimeError):
    """A state dict whose keys or shapes do not fit the model.

    A ``ValueError`` (the weights are the wrong value for this model) and a ``RuntimeError``,
    which is what ``torch.nn.Module.load_state_dict`` raises for the same problem, so callers
    written against either catch it.
    """


def read_checkpoint(
    path: str | os.PathLike, load: Callable[[str], T], what: str, valid: str, where_to_get: str
) -> T:
    """Reads a checkpoint file with ``load``, explaining a missing or unreadable file.

    Args:
        path: The file.
        load: Reads the file at the path it is given (e.g. ``torch.load`` with its options).
        what: What the file is, for messages (e.g. ``'AnyUp checkpoint'``).
        valid: What a valid file is, completing "A valid one is ..." (e.g. ``'a state dict
            saved by torch.save'``).
        where_to_get: What to do about a missing file (a sentence or more).

    Returns:
        What ``load`` returned.

    Raises:
        FileNotFoundError: ``path`` is not an existing file.
        CheckpointReadError: ``load`` raised; the message names the file, the reader's error and
            what a valid file is, and the reader's error is chained as the cause.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise FileNotFoundError(f'{what} {name!r} does not exist or is not a file. {where_to_get}')
    try:
        return load(name)
    except Exception as exc:
        # Any reader error (zip, pickle, safetensors, EOF, a tensor for an absent device): the
        # reader's own words stay in the message and as the cause.
        raise CheckpointReadError(
            f'{what} {name!r} could not be read ({type(exc).__name__}: {exc}). It may be '
            f'truncated or corrupt (download it again), or not a checkpoint at all. A valid one '
            f'is {valid}.'
        ) from exc


@dataclass(frozen=True)
class StateDictMismatch:
    """How a state dict differs from a model's.

    Attributes:
        missing: Keys the model has and the state dict lacks, in the model's order.
        unexpected: Keys the state dict has and the model lacks, in the state dict's order.
        wrong_shape: ``'<key> (checkpoint <shape>, model <shape>)'`` for keys in both whose
            shapes differ (or whose checkpoint value is not a tensor, named by its type).
    """

    missing: list[str]
    unexpected: list[str]
    wrong_shape: list[str]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong_shape)

    @property
    def count(self) -> int:
        """How many keys are wrong, of all kinds."""
        return len(self.missing) + len(self.unexpected) + len(self.wrong_shape)

    def describe(self, source: str, target: str) -> str:
        """``'<source> does not fit <target>: 1 missing key(s): ...; ...'``."""
        problems = []
        for label, keys in (
            ('missing key(s)', self.missing),
            ('unexpected key(s)', self.unexpected),
            ('key(s) with the wrong shape', self.wrong_shape),
        ):
            if keys:
                problems.append(f'{len(keys)} {label}: {_format_keys(keys)}')
        return f'{source} does not fit {target}: ' + '; '.join(problems)


def _format_keys(keys: Sequence[str]) -> str:
    shown = ', '.join(keys[:MAX_KEYS_IN_ERROR])
    if len(keys) > MAX_KEYS_IN_ERROR:
        shown += f', ... ({len(keys) - MAX_KEYS_IN_ERROR} more)'
    return shown


def state_dict_mismatch(
    state_dict: Mapping[str, Any], reference: Mapping[str, Tensor]
) -> StateDictMismatch:
    """Compares ``state_dict`` with a model's own ``reference`` (its ``state_dict()``).

    Args:
        state_dict: The weights to load.
        reference: The model's state dict.

    Returns:
        The missing, unexpected and mis-shaped keys (all empty when the weights fit).
    """
    missing = [k for k in reference if k not in state_dict]
    unexpected = [k for k in state_dict if k not in reference]
    wrong_shape = []
    for key, value in state_dict.items():
        if key not in reference:
            continue
        expected = tuple(reference[key].shape)
        if not isinstance(value, Tensor):
            wrong_shape.append(f'{key} (checkpoint {type(value).__name__}, model {expected})')
        elif tuple(value.shape) != expected:
            wrong_shape.append(f'{key} (checkpoint {tuple(value.shape)}, model {expected})')
    return StateDictMismatch(missing, unexpected, wrong_shape)


def check_state_dict_fits(
    state_dict: Mapping[str, Any], reference: Mapping[str, Tensor], source: str, target: str
) -> None:
    """Raises unless ``state_dict`` has exactly the keys and shapes of ``reference``.

    Args:
        state_dict: The weights to load.
        reference: The model's state dict.
        source: The weights, for the message (e.g. ``"checkpoint 'x.pth'"``).
        target: The model, for the message (e.g. ``"timm model 'resnet18'"``).

    Raises:
        CheckpointMismatchError: Keys are missing, unexpected or of the wrong shape; the
            message names them (:data:`MAX_KEYS_IN_ERROR` of each kind, then how many more).
    """
    mismatch = state_dict_mismatch(state_dict, reference)
    if mismatch:
        raise CheckpointMismatchError(mismatch.describe(source, target))
