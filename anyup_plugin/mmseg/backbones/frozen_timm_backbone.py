"""Any timm model as a frozen (or partly trainable) MMSegmentation backbone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor

from anyup_plugin.core.encoder import FrozenTimmEncoder
from anyup_plugin.core.input_norm import ToImageNetNorm
from anyup_plugin.utils.deprecation import deprecated_alias

from ..init_cfg import refuse_init_cfg_over_loaded_weights

__all__ = ['FrozenTimmMMSegBackbone']


@MODELS.register_module()
class FrozenTimmMMSegBackbone(BaseModule):
    """A timm model's dense features, frozen, as an MMSeg backbone.

    Configs name it ``type='FrozenTimmMMSegBackbone'`` (``'FrozenTimmBackbone'``, its old name,
    still builds it and warns). Detectron2's counterpart is
    :class:`anyup_plugin.detectron2.FrozenTimmD2Backbone`.

    Wraps :class:`anyup_plugin.core.encoder.FrozenTimmEncoder`: any timm model name, the
    chosen layers (ViT blocks or CNN stages), prefix tokens dropped, the model's final norm
    applied on request, input padded to the patch size and the maps cropped back. Every
    parameter has ``requires_grad=False`` and the timm model stays in eval mode through
    ``model.train()``, so a linear probe trains on exactly the features of the paper, and
    distributed training sees no parameter without a gradient.

    For fine-tuning, ``trainable_blocks=n`` unfreezes the last ``n`` transformer blocks up to
    the deepest selected layer (and the final norm when ``apply_norm``); the model still runs
    in eval mode (no dropout/drop-path; for ViTs this is the usual way to fine-tune).

    Input images are expected normalised with ``input_mean``/``input_std`` (0-255 scale, the
    convention of ``SegDataPreProcessor``); :class:`AnyUpEncoderDecoder` sets them from its data
    preprocessor unless given here. They are re-normalised to what the timm model expects.

    Args:
        model_name: timm model name, optionally with a pretrained tag, e.g.
            ``'vit_small_patch14_dinov2.lvd142m'``. Unknown names list close matches.
        layers: Layer index or indices (negative from the end); one output map per entry.
        apply_norm: Apply the model's final norm to the selected features.
        pretrained: Let timm download its weights (needs network access).
        checkpoint: Local weights file (timm ``model.safetensors``, or an original checkpoint
            that timm's filter converts, e.g. Meta's ``dinov2_vits14_pretrain.pth``). A missing,
            unreadable or mismatching file raises the errors of
            :mod:`anyup_plugin.core.checkpoints`, naming the file.
        trainable_blocks: Number of final blocks to train (0 = fully frozen).
        input_mean: Mean (RGB, 0-255) the input was normalised with; default ImageNet's.
        input_std: Standard deviation (RGB, 0-255); default ImageNet's.
        init_cfg: MMEngine init config. Not together with ``checkpoint`` or ``pretrained``:
            the runner's ``init_weights()`` would overwrite the weights they loaded.
        **timm_kwargs: Passed to ``timm.create_model`` (e.g. ``depth=2`` for a tiny test model).

    Shapes:
        Input (B, 3, H, W); output a tuple with one (B, C_i, ceil(H / s_i), ceil(W / s_i))
        map per layer, ``C_i = out_channels[i]``, ``s_i = strides[i]``.
    """

    def __init__(
        self,
        model_name: str,
        layers: int | Sequence[int] = -1,
        apply_norm: bool = True,
        pretrained: bool = False,
        checkpoint: str | None = None,
        trainable_blocks: int = 0,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
        init_cfg: dict | None = None,
        **timm_kwargs: Any,
    ) -> None:
        refuse_init_cfg_over_loaded_weights(
            type(self).__name__, init_cfg, checkpoint is not None or pretrained
        )
        super().__init__(init_cfg=init_cfg)
        self.input_norm = ToImageNetNorm(input_mean, input_std)
        self.norm_from_config = input_mean is not None or input_std is not None
        self.encoder = FrozenTimmEncoder(
            model_name,
            layers=layers,
            apply_norm=apply_norm,
            pretrained=pretrained,
            checkpoint=checkpoint,
            **timm_kwargs,
        )
        self.out_channels: list[int] = list(self.encoder.out_channels)
        self.strides: list[int] = list(self.encoder.strides)
        self.patch_size: int = self.encoder.patch_size
        self.trainable_blocks = self._unfreeze_last_blocks(int(trainable_blocks))

    def _unfreeze_last_blocks(self, num: int) -> int:
        if num < 0:
            raise ValueError(f'trainable_blocks must be >= 0, got {num}')
        if num == 0:
            return 0
        model = self.encoder.model
        blocks = getattr(model, 'blocks', None)
        if blocks is None or not len(blocks):
            raise ValueError(
                f'trainable_blocks needs a transformer with a .blocks list; '
                f'{type(model).__name__} has none (use trainable_blocks=0)'
            )
        last = max(self.encoder.layers)
        if num > last + 1:
            raise ValueError(
                f'trainable_blocks={num} but the deepest selected layer is block {last}: '
                f'at most {last + 1} blocks can be trained'
            )
        for block in list(blocks)[last - num + 1 : last + 1]:
            block.requires_grad_(True)
        if self.encoder.apply_norm and getattr(model, 'norm', None) is not None:
            model.norm.requires_grad_(True)
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        print_log(
            f'FrozenTimmMMSegBackbone: training blocks {last - num + 1}..{last} '
            f'({trainable / 1e6:.2f} M parameters)',
            logger='current',
        )
        return num

    def set_input_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Sets the statistics (RGB, 0-255 scale) input images are normalised with."""
        self.input_norm.set_source(mean, std)

    def forward(self, inputs: Tensor) -> tuple[Tensor, ...]:
        """Computes the selected feature maps.

        Args:
            inputs: (B, 3, H, W) images normalised with the input statistics.

        Returns:
            One (B, C_i, ceil(H / s_i), ceil(W / s_i)) tensor per selected layer.
        """
        x = self.input_norm(inputs)
        if self.trainable_blocks:
            # The encoder's forward runs under no_grad; extract_features lets gradients reach
            # the unfrozen blocks (frozen blocks record no graph: their parameters and inputs
            # do not require grad).
            return tuple(self.encoder.extract_features(x))
        return tuple(self.encoder(x))


#: The name this backbone had in configs before: ``dict(type='FrozenTimmBackbone')`` still
#: builds it, with a ``DeprecationWarning``.
FrozenTimmBackbone = MODELS.register_module(
    name='FrozenTimmBackbone',
    module=deprecated_alias(FrozenTimmMMSegBackbone, 'FrozenTimmBackbone'),
)
