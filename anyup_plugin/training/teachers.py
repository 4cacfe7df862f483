"""Frozen teacher encoders whose features AnyUp learns to upsample.

A teacher is any module that maps (B, 3, H, W) ImageNet-normalised images to a (B, C, h, w)
feature map (or a list of them, concatenated over channels) and has a patch size, e.g. the
core's :class:`~anyup_plugin.core.encoder.FrozenTimmEncoder`. With several teachers, each
training step uses one: a patch size is drawn uniformly among the teachers' patch sizes, then
a teacher uniformly among those with that patch size (how the published multi-backbone model
was trained), or with ``sampling='uniform'`` a teacher uniformly among all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from anyup_plugin.core.encoder import FrozenTimmEncoder

from .registry import MODELS, build_model

__all__ = ['Teacher', 'TeacherPool', 'build_teachers']

MODELS.register_module(name='FrozenTimmEncoder', module=FrozenTimmEncoder)

SAMPLING = ('patch_size', 'uniform')


def _as_int_patch(value: Any, name: str) -> int:
    if isinstance(value, (tuple, list)):
        if len(set(int(v) for v in value)) != 1:
            raise ValueError(f'{name}: non-square patch size {tuple(value)} is not supported')
        value = value[0]
    if value is None or int(value) < 1:
        raise ValueError(f'{name}: needs a positive patch size, got {value!r}')
    return int(value)


@MODELS.register_module()
class Teacher(nn.Module):
    """A frozen feature encoder used as a teacher.

    Args:
        encoder: The encoder module or its config (e.g.
            ``dict(type='FrozenTimmEncoder', model_name='vit_small_patch14_dinov2.lvd142m')``).
        name: Name used in logs and validation metrics; default the encoder's ``model_name``.
        patch_size: Feature stride in pixels; default the encoder's ``patch_size`` attribute.
    """

    def __init__(
        self,
        encoder: nn.Module | Mapping[str, Any],
        name: str | None = None,
        patch_size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(encoder, Mapping):
            encoder = build_model(encoder)
        self.encoder = encoder
        self.name = name or getattr(encoder, 'model_name', None) or type(encoder).__name__
        if patch_size is None:
            patch_size = getattr(encoder, 'patch_size', None)
            if patch_size is None:
                raise ValueError(
                    f'teacher {self.name!r}: the encoder has no patch_size attribute; pass '
                    'patch_size=... in the teacher config'
                )
        self.patch_size = _as_int_patch(patch_size, f'teacher {self.name!r}')
        for param in self.encoder.parameters():
            param.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True) -> Teacher:
        """Stays in eval mode (the teacher is frozen)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) ImageNet-normalised images -> (B, C, H / p, W / p) features."""
        out = self.encoder(images)
        if isinstance(out, (list, tuple)):
            out = out[0] if len(out) == 1 else torch.cat(list(out), dim=1)
        if out.dim() != 4:
            raise ValueError(f'teacher {self.name!r} returned shape {tuple(out.shape)}, not 4-D')
        return out


def build_teachers(
    teachers: Mapping[str, Any] | Sequence[Any] | Any,
) -> list[Teacher]:
    """Builds teachers from configs or modules.

    Args:
        teachers: One teacher, a list of them, or a dict ``name -> teacher``. Each is a
            :class:`Teacher` (module or config), or any encoder (module or config), which is
            wrapped in a :class:`Teacher`.

    Returns:
        The teachers, in order.
    """
    if isinstance(teachers, Mapping) and 'type' not in teachers:
        items = [(str(k), v) for k, v in teachers.items()]
    elif isinstance(teachers, (list, tuple)):
        items = [(None, v) for v in teachers]
    else:
        items = [(None, teachers)]
    if not items:
        raise ValueError('at least one teacher is needed')
    built = []
    for name, item in items:
        if isinstance(item, Mapping) and item.get('type') in ('Teacher', Teacher):
            cfg = dict(item)
            cfg.pop('type')
            if name is not None:
                cfg.setdefault('name', name)
            teacher = Teacher(**cfg)
        elif isinstance(item, Teacher):
            teacher = item
        else:
            teacher = Teacher(item, name=name)
        built.append(teacher)
    names = [t.name for t in built]
    if len(set(names)) != len(names):
        # Keep names unique for the metrics.
        for i, t in enumerate(built):
            t.name = f'{t.name}#{i}'
    return built


class TeacherPool:
    """Chooses the teacher of each training step.

    Args:
        teachers: The teachers.
        sampling: ``'patch_size'`` (a patch size uniformly, then a teacher with it uniformly)
            or ``'uniform'`` (a teacher uniformly).
    """

    def __init__(self, teachers: Sequence[Teacher], sampling: str = 'patch_size') -> None:
        if sampling not in SAMPLING:
            raise ValueError(f'sampling must be one of {SAMPLING}, got {sampling!r}')
        self.sampling = sampling
        self.groups: dict[int, list[int]] = {}
        for i, teacher in enumerate(teachers):
            self.groups.setdefault(teacher.patch_size, []).append(i)
        self.num_teachers = len(teachers)

    def sample(self, generator: torch.Generator | None = None) -> int:
        """Index of the teacher for the next step (torch's global RNG unless given one)."""
        if self.num_teachers == 1:
            return 0
        if self.sampling == 'uniform':
            return int(torch.randint(self.num_teachers, (), generator=generator))
        sizes = sorted(self.groups)
        group = self.groups[sizes[int(torch.randint(len(sizes), (), generator=generator))]]
        return group[int(torch.randint(len(group), (), generator=generator))]
