"""The ``'anyup_plugin'`` registry scope, where MMEngine looks for it (``<scope>.registry``).

MMEngine imports ``anyup_plugin.registry`` when a config sets ``default_scope =
'anyup_plugin'``; the registries themselves live with the trainer in
:mod:`anyup_plugin.training.registry`. Not imported by ``import anyup_plugin``.
"""

from anyup_plugin.training.registry import *  # noqa: F403
from anyup_plugin.training.registry import __all__  # noqa: F401
