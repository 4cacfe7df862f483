"""Feature upsamplers besides AnyUp, one interface: JAFAR, LoftUp, NAF, FeatUp's JBU, filters.

Each is written from its paper and published code, loads the published checkpoint files under
their own key names, and is checked against the published implementation (``tests/data/golden``).
"""

from .base import UpsamplingMethod, WrongFeaturesError
from .registry import METHOD_ALIASES, METHOD_CLASSES, build_method, method_class, register_method

__all__ = [
    'METHOD_ALIASES',
    'METHOD_CLASSES',
    'UpsamplingMethod',
    'WrongFeaturesError',
    'build_method',
    'method_class',
    'register_method',
]
