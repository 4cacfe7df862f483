"""MMEngine registries of the AnyUp trainer, scope ``'anyup_plugin'``.

Each registry is a child of MMEngine's root registry of the same kind, so a config with
``default_scope = 'anyup_plugin'`` finds both the components registered here and MMEngine's own
(``IterBasedTrainLoop``, ``OptimWrapper``, ``CheckpointHook``, ...). There is a child for every
kind the runner builds, so MMEngine never falls back with a "failed to search registry"
warning. The ``locations`` make MMEngine import :mod:`anyup_plugin.training` when it builds
something in this scope; configs also list it in ``custom_imports``.

Other parts of the project that need registries in the ``'anyup_plugin'`` scope should import
these rather than creating new ones (MMEngine allows one child per scope).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmengine import registry as _root
from mmengine.registry import Registry

__all__ = [
    'DATASETS',
    'DATA_SAMPLERS',
    'EVALUATOR',
    'FUNCTIONS',
    'HOOKS',
    'LOG_PROCESSORS',
    'LOOPS',
    'METRICS',
    'MODELS',
    'MODEL_WRAPPERS',
    'OPTIMIZERS',
    'OPTIM_WRAPPERS',
    'OPTIM_WRAPPER_CONSTRUCTORS',
    'PARAM_SCHEDULERS',
    'RUNNERS',
    'RUNNER_CONSTRUCTORS',
    'SCOPE',
    'TRANSFORMS',
    'VISBACKENDS',
    'VISUALIZERS',
    'WEIGHT_INITIALIZERS',
    'build_model',
]

#: The registry scope of the trainer's components (``default_scope`` in its configs).
SCOPE = 'anyup_plugin'
_LOCATIONS = ['anyup_plugin.training']


def _child(parent: Registry) -> Registry:
    return Registry(parent.name, parent=parent, scope=SCOPE, locations=_LOCATIONS)


RUNNERS = _child(_root.RUNNERS)
RUNNER_CONSTRUCTORS = _child(_root.RUNNER_CONSTRUCTORS)
LOOPS = _child(_root.LOOPS)
HOOKS = _child(_root.HOOKS)
DATASETS = _child(_root.DATASETS)
DATA_SAMPLERS = _child(_root.DATA_SAMPLERS)
TRANSFORMS = _child(_root.TRANSFORMS)
FUNCTIONS = _child(_root.FUNCTIONS)
MODELS = _child(_root.MODELS)
MODEL_WRAPPERS = _child(_root.MODEL_WRAPPERS)
WEIGHT_INITIALIZERS = _child(_root.WEIGHT_INITIALIZERS)
OPTIMIZERS = _child(_root.OPTIMIZERS)
OPTIM_WRAPPERS = _child(_root.OPTIM_WRAPPERS)
OPTIM_WRAPPER_CONSTRUCTORS = _child(_root.OPTIM_WRAPPER_CONSTRUCTORS)
PARAM_SCHEDULERS = _child(_root.PARAM_SCHEDULERS)
METRICS = _child(_root.METRICS)
EVALUATOR = _child(_root.EVALUATOR)
VISUALIZERS = _child(_root.VISUALIZERS)
VISBACKENDS = _child(_root.VISBACKENDS)
LOG_PROCESSORS = _child(_root.LOG_PROCESSORS)


def build_model(cfg: Mapping[str, Any]) -> Any:
    """Builds a model component from ``cfg`` in this scope unless ``cfg`` names another.

    MMEngine builds in the process's current default scope, which is the last one any runner or
    config activated (e.g. ``'mmseg'``); naming the scope keeps the trainer's own components
    buildable whatever ran before. A ``_scope_`` in ``cfg`` still takes precedence.
    """
    return MODELS.build({'_scope_': SCOPE, **cfg})
