"""The benchmarks the comparison runs: which config, which metrics, which generated data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ['BENCHMARKS', 'Benchmark', 'Metric', 'default_config_dir', 'get_benchmark']


@dataclass(frozen=True)
class Metric:
    """One column of the comparison table.

    Attributes:
        key: The key the config's evaluator reports (``'mIoU'``, ``'rmse'``, ...).
        label: The column header.
        higher_is_better: Whether larger values are better (for the reader's arrow).
        digits: Decimals in the Markdown table (the paper's precision).
    """

    key: str
    label: str
    higher_is_better: bool
    digits: int = 2


@dataclass(frozen=True)
class Benchmark:
    """A probe benchmark of the AnyUp paper, as the configs in ``configs/mmseg`` run it.

    Attributes:
        name: The command-line name (``'ade20k'``).
        task: ``'segmentation'``, ``'depth'`` or ``'normals'``.
        config: The AnyUp config's file name in ``configs/mmseg`` (the methods change its neck).
        demo_config: The config ``--demo`` trains on generated data; ``None``: no demo.
        metrics: The protocol's metrics, in table order.
    """

    name: str
    task: str
    config: str
    demo_config: str | None
    metrics: tuple[Metric, ...]

    @property
    def metric_keys(self) -> tuple[str, ...]:
        """The evaluator keys of :attr:`metrics`."""
        return tuple(m.key for m in self.metrics)


_SEG = (Metric('mIoU', 'mIoU', True), Metric('aAcc', 'pixel acc.', True))
_DEPTH = (
    Metric('rmse', 'RMSE (m)', False, 4),
    Metric('delta1', 'delta1', True, 4),
    Metric('rel_rmse', 'rel. RMSE', False, 4),
    Metric('rel_delta1', 'rel. delta1', True, 4),
)
_NORMALS = (
    Metric('rmse', 'RMSE (deg)', False),
    Metric('within_11_25', '<11.25', True, 3),
    Metric('within_22_5', '<22.5', True, 3),
    Metric('within_30', '<30', True, 3),
)

#: Every benchmark by its command-line name.
BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark('ade20k', 'segmentation', 'ade20k_dinov2.py', 'demo_ade20k_layout.py', _SEG),
        Benchmark(
            'coco_stuff27',
            'segmentation',
            'coco_stuff27_dinov2.py',
            'demo_coco_stuff27_layout.py',
            _SEG,
        ),
        Benchmark('voc2012', 'segmentation', 'voc2012_dinov2.py', 'demo_voc2012_layout.py', _SEG),
        Benchmark('nyu_depth', 'depth', 'nyu_depth_dinov2.py', 'demo_nyu_depth.py', _DEPTH),
        Benchmark(
            'nyu_normals', 'normals', 'nyu_normals_dinov2.py', 'demo_nyu_normals.py', _NORMALS
        ),
    )
}


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called ``name``.

    Raises:
        ValueError: Unknown name; the message lists the known ones.
    """
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ValueError(
            f'unknown benchmark {name!r}; known benchmarks: {", ".join(BENCHMARKS)}'
        ) from None


def default_config_dir() -> Path:
    """``configs/mmseg`` of the source checkout this package runs from (an editable install)."""
    return Path(__file__).resolve().parents[2] / 'configs' / 'mmseg'
