"""Config keys of the Detectron2 adapter (``MODEL.ANYUP``, ``MODEL.TIMM`` and a few more)."""

from __future__ import annotations

from detectron2.config import CfgNode

__all__ = ['add_anyup_config']


def add_anyup_config(cfg: CfgNode) -> CfgNode:
    """Adds the AnyUp adapter's keys, with their defaults, to a Detectron2 config.

    Call it on ``get_cfg()`` before ``merge_from_file`` (as Detectron2 projects do with their
    own ``add_*_config``). Keys added:

    * ``MODEL.TIMM.NAME``: timm model name of the frozen encoder.
    * ``MODEL.TIMM.LAYERS``: feature layers (negative counts from the end); the backbone
      outputs ``feat0``, ``feat1``, ... in this order.
    * ``MODEL.TIMM.APPLY_NORM``: apply the model's final norm to those features.
    * ``MODEL.TIMM.CHECKPOINT``: local encoder weights ("" keeps timm's initialisation
      unless ``MODEL.TIMM.PRETRAINED``).
    * ``MODEL.TIMM.PRETRAINED``: let timm download its pretrained weights.
    * ``MODEL.TIMM.KWARGS``: extra ``timm.create_model`` arguments, as a list of
      ``[key, value]`` pairs (e.g. ``[["depth", 2]]``).
    * ``MODEL.ANYUP.UPSAMPLER``: ``'anyup'`` or ``'bilinear'`` (the baseline).
    * ``MODEL.ANYUP.CHECKPOINT``: AnyUp weights, a local path or a published name
      (``'anyup_multi_backbone'``); "" keeps a random initialisation (with a warning).
    * ``MODEL.ANYUP.FROZEN``: keep AnyUp frozen (the probe protocol); ``False`` trains it.
    * ``MODEL.ANYUP.WINDOW_RATIO``: AnyUp's attention window relative to the image.
    * ``MODEL.ANYUP.OUTPUT_STRIDE``: input pixels per output feature cell (1: full size).
    * ``INPUT.CENTER_CROP_SIZE``: square centre crop after the short-side resize (0: off).
    * ``SOLVER.OPTIMIZER``: ``'AdamW'`` or ``'SGD'``; ``SOLVER.BETAS`` for AdamW.
    * ``SOLVER.LR_EPOCHS``: steps of ``LR_SCHEDULER_NAME: EpochCosineLR`` (cosine annealing
      held constant within each of these equal parts of ``MAX_ITER``).
    * ``DATASETS.ADE20K151_ROOT``: folder holding ``images/`` and ``annotations/`` of
      ADEChallengeData2016 (registered by ``tools/train_net_d2.py``).

    Args:
        cfg: A Detectron2 config (``detectron2.config.get_cfg()``).

    Returns:
        The same config, for chaining.
    """
    cfg.MODEL.TIMM = CfgNode()
    cfg.MODEL.TIMM.NAME = 'vit_small_patch14_dinov2.lvd142m'
    cfg.MODEL.TIMM.LAYERS = [-1]
    cfg.MODEL.TIMM.APPLY_NORM = True
    cfg.MODEL.TIMM.CHECKPOINT = ''
    cfg.MODEL.TIMM.PRETRAINED = False
    cfg.MODEL.TIMM.KWARGS = []

    cfg.MODEL.ANYUP = CfgNode()
    cfg.MODEL.ANYUP.UPSAMPLER = 'anyup'
    cfg.MODEL.ANYUP.CHECKPOINT = ''
    cfg.MODEL.ANYUP.FROZEN = True
    cfg.MODEL.ANYUP.WINDOW_RATIO = 0.1
    cfg.MODEL.ANYUP.OUTPUT_STRIDE = 1

    cfg.INPUT.CENTER_CROP_SIZE = 0
    cfg.SOLVER.OPTIMIZER = 'SGD'
    cfg.SOLVER.BETAS = (0.9, 0.999)
    cfg.SOLVER.LR_EPOCHS = 0
    cfg.DATASETS.ADE20K151_ROOT = ''
    return cfg
