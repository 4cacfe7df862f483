"""MMEngine runtime pieces shared by every training config of the project.

- :class:`WeightsOnlyCheckpointHook`: the run's checkpoints load with
  ``torch.load(weights_only=True)``, so ``--resume`` works with torch >= 2.6.
- :class:`RandomStateHook` and :func:`collate_with_random_state`: the random generators (main
  process and data-loader workers) are stored in checkpoints, so a resumed run continues the
  uninterrupted one exactly.
- :func:`init_distributed` / :func:`cpu_model_wrapper_cfg`: multi-process training on CPU (gloo).
- :func:`prepare_config` / :func:`build_runner`: what ``tools/train.py`` and ``tools/test.py`` do.

Importing this package registers the hooks in MMEngine's root ``HOOKS`` registry and the collate
wrapper in its root ``FUNCTIONS`` (visible from every scope); it has no other side effect.
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
from .random_state import (
    RandomStateHook,
    ResumeWorkerInit,
    add_random_state_tracking,
    collate_with_random_state,
    get_random_state,
    set_random_state,
)
from .runner_setup import add_weights_only_hook, build_runner, prepare_config

__all__ = [
    'LAUNCHERS',
    'RandomStateHook',
    'ResumeWorkerInit',
    'WeightsOnlyCheckpointHook',
    'add_random_state_tracking',
    'add_weights_only_hook',
    'build_runner',
    'collate_with_random_state',
    'cpu_model_wrapper_cfg',
    'find_resume_checkpoint',
    'from_weights_only',
    'get_random_state',
    'init_distributed',
    'is_complete_checkpoint',
    'prepare_config',
    'set_random_state',
    'to_weights_only',
    'unsafe_entries',
]
