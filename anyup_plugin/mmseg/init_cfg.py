"""The one rule for MMEngine ``init_cfg`` beside weights a module loads itself."""

from __future__ import annotations

__all__ = ['refuse_init_cfg_over_loaded_weights']


def refuse_init_cfg_over_loaded_weights(
    owner: str, init_cfg: dict | list | None, loads_weights: bool
) -> None:
    """Raises if ``init_cfg`` would overwrite weights the module loads at construction.

    MMEngine's runner calls ``init_weights()`` after building the model, which applies
    ``init_cfg``: on a module that loaded a checkpoint in its constructor it would silently
    re-initialise what was loaded.

    Args:
        owner: The module's class name, named in the error.
        init_cfg: The module's MMEngine init config.
        loads_weights: Whether the module loads weights itself (a checkpoint, pretrained).

    Raises:
        ValueError: Both are set.
    """
    if init_cfg is not None and loads_weights:
        raise ValueError(
            f'{owner}: init_cfg={init_cfg!r} would re-initialise the weights loaded from its '
            'checkpoint when the runner calls init_weights(); set the weights one way only '
            '(drop init_cfg, or the checkpoint)'
        )
