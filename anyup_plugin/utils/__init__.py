"""Helpers below the core: atomic file writes, torchvision's resize/crop arithmetic and this
process's resident memory (`process_memory`).

Nothing here imports :mod:`anyup_plugin.core` (the core itself uses :mod:`.io`); the PCA
visualisation, which checks its inputs with the core's checks, is in :mod:`anyup_plugin.apis`.
"""
