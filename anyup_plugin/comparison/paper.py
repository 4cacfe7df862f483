"""The AnyUp paper's published probe results (Tab. 2 and 3), DINOv2 ViT-S/14 backbone.

Numbers as printed in AnyUp (Wimmer et al., ICLR 2026, arXiv 2510.12764), keyed by this
package's benchmark names, the method keys of :mod:`anyup_plugin.core.methods` and the metric
keys the evaluators report (``mIoU``/``aAcc`` in percent; depth in metres; normals in degrees
and shares). ``None``: the paper does not report that value. NAF postdates the paper, and the
guided filter, joint bilateral filter and bicubic rows are not in its tables.
"""

from __future__ import annotations

__all__ = ['PAPER_RESULTS', 'PAPER_SOURCE', 'paper_result']

#: Where each benchmark's numbers are printed.
PAPER_SOURCE: dict[str, str] = {
    'ade20k': 'AnyUp Tab. 2',
    'coco_stuff27': 'AnyUp Tab. 2',
    'voc2012': 'AnyUp Tab. 2',
    'nyu_depth': 'AnyUp Tab. 3',
    'nyu_normals': 'AnyUp Tab. 3',
}


def _seg(miou: float, aacc: float) -> dict[str, float]:
    return {'mIoU': miou, 'aAcc': aacc}


def _depth(rmse, delta1, rel_rmse, rel_delta1) -> dict[str, float | None]:
    return {'rmse': rmse, 'delta1': delta1, 'rel_rmse': rel_rmse, 'rel_delta1': rel_delta1}


def _normals(rmse, w11, w22, w30) -> dict[str, float | None]:
    return {'rmse': rmse, 'within_11_25': w11, 'within_22_5': w22, 'within_30': w30}


#: benchmark -> method -> metric -> value (``None``: not reported).
PAPER_RESULTS: dict[str, dict[str, dict[str, float | None]]] = {
    'coco_stuff27': {
        'bilinear': _seg(59.48, 79.32),
        'featup': _seg(61.95, 81.14),
        'loftup': _seg(62.15, 81.32),
        'jafar': _seg(61.82, 81.07),
        'anyup': _seg(62.16, 81.37),
    },
    'voc2012': {
        'bilinear': _seg(81.43, 95.38),
        'featup': _seg(83.37, 96.04),
        'loftup': _seg(83.69, 96.11),
        'jafar': _seg(84.36, 96.22),
        'anyup': _seg(84.00, 96.19),
    },
    'ade20k': {
        'bilinear': _seg(40.54, 74.12),
        'featup': _seg(42.19, 75.57),
        'loftup': _seg(42.02, 75.72),
        'jafar': _seg(42.06, 75.48),
        'anyup': _seg(42.43, 75.85),
    },
    'nyu_depth': {
        'bilinear': _depth(0.4925, 0.8081, 0.3582, 0.9112),
        'featup': _depth(0.4816, 0.8156, 0.3413, 0.9193),
        'loftup': _depth(0.4847, 0.8127, 0.3478, 0.9166),
        'jafar': _depth(0.4906, 0.8052, 0.3481, 0.9180),
        'anyup': _depth(0.4755, 0.8216, None, None),
    },
    'nyu_normals': {
        'bilinear': _normals(32.70, 0.26, 0.53, 0.66),
        'featup': _normals(32.69, 0.25, 0.53, 0.66),
        'loftup': _normals(33.94, 0.26, 0.51, 0.64),
        'jafar': _normals(31.54, 0.28, 0.56, 0.68),
        'anyup': _normals(31.17, None, None, None),
    },
}


def paper_result(benchmark: str, method: str) -> dict[str, float | None] | None:
    """The paper's numbers for ``method`` on ``benchmark``; ``None`` when it has no row."""
    return PAPER_RESULTS.get(benchmark, {}).get(method)
