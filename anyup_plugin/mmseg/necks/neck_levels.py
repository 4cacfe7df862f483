"""Which backbone level each output of an image-guided neck comes from, and at what stride.

A backbone level is a (B, C, h, w) map, or a ``[map, cls_token]`` pair (MMSeg's
``VisionTransformer`` with ``output_cls_token=True``; the token is (B, C)). Necks upsample
the map and hand the rest of the level on untouched, in the same list/tuple form, so heads
that read the token (``DPTHead``'s readout) get exactly what the backbone gave them.

The plan (:func:`plan_outputs`) is worked out at each forward from the maps the backbone
gave, so a config whose ``in_index``/``output_stride`` do not fit its backbone fails at the
first forward with the config keys, the number of maps and their shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

__all__ = ['Level', 'describe_levels', 'level_map', 'plan_outputs', 'with_map']

#: A backbone output: a (B, C, h, w) map, or ``[map, cls_token, ...]``.
Level = Tensor | Sequence[Tensor]

#: One output of the neck: (backbone level index, stride; ``None`` passes it through).
Output = tuple[int, int | None]


def level_map(level: Level, position: int, owner: str) -> Tensor:
    """The (B, C, h, w) map of a backbone level (the first item of a ``[map, token]`` pair)."""
    if isinstance(level, Tensor):
        return level
    if isinstance(level, (list, tuple)) and level and isinstance(level[0], Tensor):
        return level[0]
    raise TypeError(
        f'{owner}: backbone output {position} is a {type(level).__name__}; expected a '
        '(B, C, h, w) map or a [map, cls_token] pair'
    )


def with_map(level: Level, new_map: Tensor) -> Level:
    """``level`` with its map replaced by ``new_map``; class tokens pass through as they are."""
    if isinstance(level, Tensor):
        return new_map
    # Keep the container kind: heads assert on it (DPTHead unpacks each level as a pair).
    container = list if isinstance(level, list) else tuple
    return container([new_map, *level[1:]])


def describe_levels(levels: Sequence[Level]) -> str:
    """``"2 map(s): (2, 64, 4, 4) + token (2, 64), ..."``: what a backbone gave, for errors."""
    parts = []
    for level in levels:
        if isinstance(level, Tensor):
            parts.append(_shape(level))
        elif isinstance(level, (list, tuple)):
            parts.append(' + token '.join(_shape(x) for x in level))
        else:
            parts.append(_shape(level))
    return f'{len(levels)} map(s): ' + ', '.join(parts)


def plan_outputs(
    levels: Sequence[Level], in_index: Sequence[int] | None, strides: Sequence[int], owner: str
) -> list[Output]:
    """The neck's outputs, in order, for the backbone's ``levels``.

    With n levels, I the selected indices (``in_index``, all n when ``None``) and S the
    strides:

    * one stride: n outputs, the selected levels at that stride, the others passed through;
    * as many strides as selected levels: n outputs, level I[k] at stride S[k], the others
      passed through;
    * one selected level and several strides (a pyramid): len(S) outputs, that level at each
      stride in order; the other levels are dropped.

    Raises:
        IndexError: An ``in_index`` entry outside [-n, n).
        ValueError: Any other number of strides, or a level listed twice with its own stride.
    """
    num = len(levels)
    if in_index is None:
        selected = list(range(num))
    else:
        bad = [i for i in in_index if not -num <= i < num]
        if bad:
            raise IndexError(
                _mismatch(
                    owner,
                    f'neck.in_index={_show(in_index)} selects map {bad[0]}, which does not exist',
                    levels,
                )
            )
        selected = [i % num for i in in_index]
    if len(strides) > 1 and len(selected) == 1:
        return [(selected[0], stride) for stride in strides]
    if len(strides) not in (1, len(selected)):
        raise ValueError(
            _mismatch(
                owner,
                f'neck.output_stride={_show(strides)} gives {len(strides)} strides for '
                f'{len(selected)} selected map(s) (neck.in_index={_show(in_index)})',
                levels,
            )
        )
    if len(strides) > 1 and len(set(selected)) < len(selected):
        raise ValueError(
            _mismatch(
                owner,
                f'neck.in_index={_show(in_index)} lists a map twice, each with its own stride; '
                'for several strides of one map give neck.in_index that one index',
                levels,
            )
        )
    stride_of = {idx: strides[pos % len(strides)] for pos, idx in enumerate(selected)}
    return [(idx, stride_of.get(idx)) for idx in range(num)]


def _mismatch(owner: str, problem: str, levels: Sequence[Level]) -> str:
    return (
        f'{owner}: {problem}. The backbone gave {describe_levels(levels)}. Valid settings: '
        'neck.in_index None (all maps) or indices in [-n, n) for n maps; neck.output_stride '
        'one stride for every selected map, one per selected map, or several strides with one '
        'selected map (a pyramid of that map).'
    )


def _shape(x: object) -> str:
    return str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__


def _show(value: Sequence[int] | None) -> str:
    if value is None:
        return 'None'
    return str(value[0]) if len(value) == 1 else str(list(value))
