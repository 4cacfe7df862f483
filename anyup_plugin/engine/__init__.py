"""MMEngine runtime pieces shared by every training config of the project.

- :class:`WeightsOnlyCheckpointHook`: the run's checkpoints load with
  ``torch.load(weights_only=True)``, so ``--resume`` works with torch >= 2.6.
- :func:`init_distributed` / :func:`cpu_model_wrapper_cfg`: multi-process training on CPU (gloo).
- :func:`prepare_config` / :func:`build_runner`: what ``tools/train.py`` and ``tools/test.py`` do.

Importing this package registers the hook in MMEngine's root ``HOOKS`` registry (visible from
every scope); it has no other side effect.
"""

from .checkpoint import (
    WeightsOnlyCheckpointHook,
    find_resume_checkpoint,
    from_weights_only,
    is_complete_checkpoint,
    to_weights_only,
    unsafe_entries,
)
from .dist import LAUNCHERS, cpu_model_wrapper_cfg, init_distributed
from .runner_setup import add_weights_only_hook, build_runner, prepare_config

__all__ = [
    'LAUNCHERS',
    'WeightsOnlyCheckpointHook',
    'add_weights_only_hook',
    'build_runner',
    'cpu_model_wrapper_cfg',
    'find_resume_checkpoint',
    'from_weights_only',
    'init_distributed',
    'is_complete_checkpoint',
    'prepare_config',
    'to_weights_only',
    'unsafe_entries',
]
