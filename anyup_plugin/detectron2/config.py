"""Config keys of the Detectron2 adapter (``MODEL.ANYUP``, ``MODEL.TIMM`` and a few more)."""

from __future__ import annotations

from typing import Any

from detectron2.config import CfgNode

__all__ = ['add_anyup_config', 'keyword_pairs']


def add_anyup_config(cfg: CfgNode) -> CfgNode:
    """Adds the AnyUp adapter's keys, with their defaults, to a Detectron2 config.

    Call it on ``get_cfg()`` before ``merge_from_file`` (as Detectron2 projects do with their
    own ``add_*_config``). Keys added:

    ``MODEL.ANYUP`` (the ``build_anyup_backbone`` wrapper, set ``MODEL.BACKBONE.NAME`` to it;
    despite the name, it runs any upsampling method):

    * ``BOTTOM_UP``: the ``BACKBONE_REGISTRY`` name of the backbone it owns, e.g.
      ``'build_frozen_timm_backbone'`` (``MODEL.TIMM``) or Detectron2's
      ``'build_resnet_backbone'`` (``MODEL.RESNETS``).
    * ``IN_FEATURES``: bottom-up outputs to upsample (``'feat0'``, ... for timm; ``'res2'``
      ... ``'res5'`` for a ResNet).
    * ``STRIDES``: output strides, powers of two, each at most the feature's own stride (1:
      input size, the linear probe; 4 for ``SemSegFPNHead``). Every feature is upsampled to
      every stride, named ``'<feature>_s<stride>'`` (e.g. ``'feat0_s1'``).
    * ``UPSAMPLER``: the upsampling method: ``'anyup'``, ``'bilinear'`` (the baseline) or any
      method of :mod:`anyup_plugin.core.methods` (``'bicubic'``, ``'guided_filter'``,
      ``'joint_bilateral'``, ``'featup'``, ``'jafar'``, ``'loftup'``, ``'naf'``, or one added
      with ``register_method``); an unknown name lists the known ones. Switch it on the command
      line: ``MODEL.ANYUP.UPSAMPLER guided_filter``.
    * ``CHECKPOINT``: the method's weights. AnyUp: a local path or a published name
      (``'anyup_paper'``, ``'anyup_multi_backbone'``); another method: its published
      checkpoint file (``MODEL.ANYUP.UPSAMPLER jafar MODEL.ANYUP.CHECKPOINT /path/jafar.pth``),
      and it ignores AnyUp's published names (with a warning), as ``'bilinear'`` ignores any
      checkpoint. "" keeps a random initialisation (with a warning for methods with weights).
    * ``METHOD_KWARGS``: the method's own constructor arguments as ``[key, value]`` pairs, as
      ``MODEL.TIMM.KWARGS`` takes them, e.g. ``MODEL.ANYUP.METHOD_KWARGS
      "[['align_corners', True]]"`` for ``'bilinear'`` (Detectron2 reads the quoted value
      as a Python literal). A key the method's signature does not have fails at build,
      listing those it takes. For AnyUp they override ``WINDOW_RATIO`` and
      ``ATTENTION_KERNEL``.
    * ``FROZEN``: keep the method frozen (the probe protocol; no gradients, eval mode);
      ``False`` trains it.
    * ``FREEZE_BOTTOM_UP``: keep the bottom-up backbone frozen (no gradients, eval mode);
      ``False`` leaves it to its own settings (e.g. ``MODEL.BACKBONE.FREEZE_AT``). A timm
      backbone is always frozen.
    * ``WINDOW_RATIO``: AnyUp's attention window relative to the image; ``None`` (the
      default) keeps the checkpoint's (stored beside trained exports, else 0.1). Other
      methods ignore it.
    * ``ATTENTION_KERNEL``: how AnyUp computes its attention, ``'auto'`` (the default, today
      ``'matmul'``), ``'matmul'``, ``'sdpa'`` (PyTorch's fused kernels, for GPUs) or
      ``'triton'`` (fused Triton kernels, CUDA only, not yet run on GPU hardware); all exact.
      Other methods ignore it.

    ``MODEL.TIMM`` (the ``build_frozen_timm_backbone`` bottom-up):

    * ``NAME``: timm model name of the frozen encoder.
    * ``LAYERS``: feature layers (negative counts from the end); outputs ``feat0``, ``feat1``,
      ... in this order.
    * ``APPLY_NORM``: apply the model's final norm to those features.
    * ``CHECKPOINT``: local encoder weights ("" keeps timm's initialisation unless
      ``PRETRAINED``).
    * ``PRETRAINED``: let timm download its pretrained weights.
    * ``KWARGS``: extra ``timm.create_model`` arguments, ``[key, value]`` pairs (e.g.
      ``[["depth", 2]]``).

    Data and solver:

    * ``INPUT.CENTER_CROP_SIZE``: square centre crop after the short-side resize (0: off).
    * ``SOLVER.OPTIMIZER``: ``'AdamW'`` or ``'SGD'``; ``SOLVER.BETAS`` for AdamW.
    * ``SOLVER.LR_EPOCHS``: steps of ``LR_SCHEDULER_NAME: EpochCosineLR`` (cosine annealing
      held constant within each of these equal parts of ``MAX_ITER``).
    * ``DATASETS.ADE20K151_ROOT``, ``DATASETS.COCO_STUFF27_ROOT``, ``DATASETS.VOC2012_ROOT``:
      dataset folders that ``register_datasets_from_cfg`` (and so ``tools/train_net_d2.py``)
      registers; "" registers nothing.

    Args:
        cfg: A Detectron2 config (``detectron2.config.get_cfg()``).

    Returns:
        The same config, for chaining.
    """
    cfg.MODEL.ANYUP = CfgNode()
    cfg.MODEL.ANYUP.BOTTOM_UP = 'build_frozen_timm_backbone'
    cfg.MODEL.ANYUP.IN_FEATURES = ['feat0']
    cfg.MODEL.ANYUP.STRIDES = [1]
    cfg.MODEL.ANYUP.UPSAMPLER = 'anyup'
    cfg.MODEL.ANYUP.CHECKPOINT = ''
    cfg.MODEL.ANYUP.METHOD_KWARGS = []
    cfg.MODEL.ANYUP.FROZEN = True
    cfg.MODEL.ANYUP.FREEZE_BOTTOM_UP = True
    cfg.MODEL.ANYUP.WINDOW_RATIO = None
    cfg.MODEL.ANYUP.ATTENTION_KERNEL = 'auto'

    cfg.MODEL.TIMM = CfgNode()
    cfg.MODEL.TIMM.NAME = 'vit_small_patch14_dinov2.lvd142m'
    cfg.MODEL.TIMM.LAYERS = [-1]
    cfg.MODEL.TIMM.APPLY_NORM = True
    cfg.MODEL.TIMM.CHECKPOINT = ''
    cfg.MODEL.TIMM.PRETRAINED = False
    cfg.MODEL.TIMM.KWARGS = []

    cfg.INPUT.CENTER_CROP_SIZE = 0
    cfg.SOLVER.OPTIMIZER = 'SGD'
    cfg.SOLVER.BETAS = (0.9, 0.999)
    cfg.SOLVER.LR_EPOCHS = 0
    cfg.DATASETS.ADE20K151_ROOT = ''
    cfg.DATASETS.COCO_STUFF27_ROOT = ''
    cfg.DATASETS.VOC2012_ROOT = ''
    return cfg


def keyword_pairs(pairs: Any, key: str, example: str) -> dict[str, Any]:
    """A config key holding ``[key, value]`` pairs (``MODEL.TIMM.KWARGS``, ...) as a dict.

    Args:
        pairs: The config value, e.g. ``[['depth', 2]]``.
        key: The config key, named in the error.
        example: A valid value, shown in the error.

    Raises:
        ValueError: ``pairs`` is not a sequence of two-element pairs.
    """
    try:
        return {str(name): value for name, value in pairs}
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f'{key} must be [key, value] pairs (e.g. {example}), got {pairs!r}'
        ) from exc
