"""AnyUp weights by name or path: reading, writing, and the hyper-parameters to rebuild a model.

Weights are plain state dicts with the published key names, read with
``torch.load(weights_only=True)`` (tensors and plain containers, never code). What the model is
built with comes from, in this order of precedence:

1. arguments passed by the caller (e.g. ``window_ratio`` from a neck's config);
2. the tensor shapes: ``qk_dim`` is the output width of ``image_encoder.0.weight``
   ``(d, 3, 1, 1)`` and ``lfu_kernel_size`` the side of ``key_features_encoder.0.basis``
   ``(d, 1, k, k)``;
3. a JSON file beside the weights (``<weights without suffix>.json``, see
   :func:`hyper_parameters_path`) for what no shape shows: ``num_heads``, ``num_groups``,
   ``window_ratio``. :func:`save_pretrained` (and so the trainer's ``ExportStudentHook``) writes
   it;
4. the constructor's defaults, which are the published models' values.

So the published checkpoints load as the plain state dicts they are, and a trained student of
other widths (e.g. ``qk_dim=32``) loads with ``AnyUp.from_pretrained(path)`` alone.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from anyup_plugin.utils.io import atomic_write

from .checkpoints import check_state_dict_fits, read_checkpoint

__all__ = [
    'HYPER_PARAMETERS',
    'PUBLISHED_CHECKPOINTS',
    'hyper_parameters_of',
    'hyper_parameters_path',
    'infer_hyper_parameters',
    'load_checkpoint_state_dict',
    'load_pretrained',
    'published_cache_path',
    'read_hyper_parameters',
    'save_pretrained',
]

logger = logging.getLogger(__name__)

#: The published checkpoints (CC-BY-4.0, by the AnyUp authors), by name.
PUBLISHED_CHECKPOINTS: dict[str, str] = {
    'anyup_paper': 'https://github.com/wimmerth/anyup/releases/download/checkpoint/anyup_paper.pth',
    'anyup_multi_backbone': (
        'https://github.com/wimmerth/anyup/releases/download/checkpoint_v2/anyup_multi_backbone.pth'
    ),
}

#: Constructor arguments that describe the architecture (stored beside exported weights).
HYPER_PARAMETERS = ('qk_dim', 'num_heads', 'lfu_kernel_size', 'window_ratio', 'num_groups')

_SIDECAR_FORMAT = 'anyup-hyper-parameters'
_SIDECAR_VERSION = 1
# Keys whose shapes give hyper-parameters away: (key, hyper-parameter, dimension).
_SHAPE_HINTS = (
    ('image_encoder.0.weight', 'qk_dim', 0),
    ('key_features_encoder.0.basis', 'lfu_kernel_size', -1),
)

ModelT = TypeVar('ModelT', bound=nn.Module)

# What an AnyUp weights file is, for the messages about one that cannot be read.
_VALID_CHECKPOINT = (
    "a state dict saved by torch.save (plain, or under 'state_dict' or 'model'): a published "
    f'AnyUp .pth ({", ".join(PUBLISHED_CHECKPOINTS)}) or an AnyUp export (save_pretrained, '
    "the trainer's ExportStudentHook)"
)


def published_cache_path(name: str) -> str:
    """Where a published checkpoint is kept once downloaded (torch's hub cache)."""
    url = PUBLISHED_CHECKPOINTS[name]
    return os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(url))


def _download_published(name: str) -> str:
    cached = published_cache_path(name)
    if os.path.isfile(cached):
        return cached
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    try:
        torch.hub.download_url_to_file(PUBLISHED_CHECKPOINTS[name], cached, progress=False)
    except Exception as err:
        raise FileNotFoundError(
            f'Could not download the published AnyUp checkpoint {name!r} '
            f'({type(err).__name__}: {err}). Download it on a machine with internet '
            f'from {PUBLISHED_CHECKPOINTS[name]} and place it at {cached}, or pass the '
            'local file path instead of the name.'
        ) from err
    return cached


def load_checkpoint_state_dict(
    name_or_path: str | os.PathLike, map_location: str | torch.device = 'cpu'
) -> dict[str, Tensor]:
    """Reads an AnyUp state dict from a local file or a published name.

    Args:
        name_or_path: A local file (a plain state dict, or a dict holding one under
            ``'state_dict'`` or ``'model'``) or a published name (``'anyup_paper'``,
            ``'anyup_multi_backbone'``), downloaded into torch's hub cache when online.
        map_location: Where to load the tensors.

    Returns:
        The state dict.

    Raises:
        FileNotFoundError: A path that does not exist, or a published name that is not
            cached and cannot be downloaded (the message says where to put the file).
        CheckpointReadError: The file cannot be read (truncated, corrupt, not a
            ``torch.save`` file); the message names it, and the reader's error is the cause.
        ValueError: The file holds no state dict.
    """
    name = os.fspath(name_or_path)
    if name in PUBLISHED_CHECKPOINTS and not os.path.isfile(name):
        name = _download_published(name)
    state = read_checkpoint(
        name,
        lambda path: torch.load(path, map_location=map_location, weights_only=True),
        what='AnyUp checkpoint',
        valid=_VALID_CHECKPOINT,
        where_to_get=(
            'Pass the path of a trained AnyUp (e.g. work_dirs/<run>/anyup_student_latest.pth) '
            f'or a published name ({", ".join(PUBLISHED_CHECKPOINTS)}).'
        ),
    )
    for key in ('state_dict', 'model'):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise ValueError(
            f'AnyUp checkpoint {name!r} does not hold a state dict (got {type(state).__name__}). '
            f'A valid one is {_VALID_CHECKPOINT}.'
        )
    return dict(state)


def infer_hyper_parameters(state_dict: Mapping[str, Tensor]) -> dict[str, int]:
    """The hyper-parameters that the tensor shapes give away (``qk_dim``, ``lfu_kernel_size``).

    Args:
        state_dict: An AnyUp state dict (published key names).

    Returns:
        The ones found (keys that are missing are left out).
    """
    found = {}
    for key, name, dim in _SHAPE_HINTS:
        tensor = state_dict.get(key)
        if isinstance(tensor, Tensor) and tensor.dim() > 0:
            found[name] = int(tensor.shape[dim])
    return found


def hyper_parameters_path(weights_path: str | os.PathLike) -> str:
    """The JSON file beside ``weights_path`` that holds its hyper-parameters.

    ``run/anyup_student_latest.pth`` -> ``run/anyup_student_latest.json``.
    """
    root, _ = os.path.splitext(os.fspath(weights_path))
    return root + '.json'


def read_hyper_parameters(weights_path: str | os.PathLike) -> dict[str, Any]:
    """The hyper-parameters stored beside ``weights_path``, or ``{}`` when there is no file.

    Raises:
        ValueError: The file is not a hyper-parameter file of this format.
    """
    path = hyper_parameters_path(weights_path)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding='utf-8') as f:
        data = json.load(f)
    if not isinstance(data, dict) or data.get('format') != _SIDECAR_FORMAT:
        raise ValueError(f'{path} is not an AnyUp hyper-parameter file (format {_SIDECAR_FORMAT})')
    if data.get('version') != _SIDECAR_VERSION:
        raise ValueError(f'{path}: unknown version {data.get("version")!r}')
    values = data.get('hyper_parameters', {})
    return {k: values[k] for k in HYPER_PARAMETERS if k in values}


def hyper_parameters_of(model: nn.Module) -> dict[str, Any]:
    """What rebuilds ``model`` (an AnyUp): its widths, heads, GroupNorm groups, window ratio."""
    params: dict[str, Any] = dict(infer_hyper_parameters(model.state_dict()))
    params['num_heads'] = int(model.num_heads)
    params['window_ratio'] = float(model.window_ratio)
    groups = {m.num_groups for m in model.modules() if isinstance(m, nn.GroupNorm)}
    if len(groups) == 1:
        params['num_groups'] = groups.pop()
    return params


def save_pretrained(model: nn.Module, path: str | os.PathLike) -> None:
    """Saves an AnyUp as a plain state dict plus its hyper-parameters beside it (atomically).

    The weights file holds only CPU tensors under the published key names (it loads with
    ``torch.load(weights_only=True)`` and ``AnyUp.load_state_dict``); the JSON file at
    :func:`hyper_parameters_path` lets ``AnyUp.from_pretrained(path)`` rebuild the model.

    Args:
        model: The AnyUp model.
        path: The weights file (e.g. ``anyup_student_latest.pth``).
    """
    state = {k: v.detach().to('cpu').clone().contiguous() for k, v in model.state_dict().items()}
    sidecar = {
        'format': _SIDECAR_FORMAT,
        'version': _SIDECAR_VERSION,
        'hyper_parameters': hyper_parameters_of(model),
    }
    # The hyper-parameters first: a kill between the two writes leaves new hyper-parameters
    # with old weights only when both describe the same architecture (an export overwrites
    # the files of the same model).
    with atomic_write(hyper_parameters_path(path), suffix='.json') as tmp:
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(sidecar, f, indent=2, sort_keys=True)
            f.write('\n')
    with atomic_write(path, suffix='.pth') as tmp:
        torch.save(state, tmp)


def load_pretrained(
    cls: type[ModelT],
    name_or_path: str | os.PathLike,
    map_location: str | torch.device = 'cpu',
    **kwargs: Any,
) -> ModelT:
    """Builds ``cls`` (AnyUp) for the weights at ``name_or_path`` and loads them strictly.

    Args:
        cls: The model class.
        name_or_path: See :func:`load_checkpoint_state_dict`.
        map_location: The device to load the tensors to and to build the model on (e.g.
            ``'cpu'``, ``'cuda'``, ``torch.device('cuda', 1)``, or ``'meta'`` for shapes only).
        **kwargs: Constructor arguments; they take precedence over what the weights say.

    Returns:
        The model on ``map_location``, in eval mode.

    Raises:
        CheckpointMismatchError: The weights do not fit the architecture they describe with
            ``kwargs`` (the message names the file and every offending key).
    """
    state_dict = load_checkpoint_state_dict(name_or_path, map_location)
    name = os.fspath(name_or_path)
    stored = {} if name in PUBLISHED_CHECKPOINTS else read_hyper_parameters(name)
    params = {**stored, **infer_hyper_parameters(state_dict), **kwargs}
    if name not in PUBLISHED_CHECKPOINTS and not stored:
        unknown = [k for k in ('num_heads', 'num_groups', 'window_ratio') if k not in params]
        if unknown:
            logger.info(
                'no %s beside %s: %s take the constructor defaults (the published values)',
                hyper_parameters_path(name),
                name,
                ', '.join(unknown),
            )
    # Built on the device the weights were loaded to, so that the model is where the caller
    # asked (and a 'cuda' model never holds a CPU copy of its weights).
    with torch.device(map_location):
        model = cls(**params)
    arguments = ', '.join(f'{key}={value!r}' for key, value in params.items())
    check_state_dict_fits(
        state_dict, model.state_dict(), f'AnyUp checkpoint {name!r}', f'{cls.__name__}({arguments})'
    )
    model.load_state_dict(state_dict)
    return model.eval()
