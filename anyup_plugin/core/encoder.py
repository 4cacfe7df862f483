"""A frozen timm encoder that returns dense feature maps, for any input size.

:class:`FrozenTimmEncoder` wraps any `timm <https://github.com/huggingface/pytorch-image-models>`_
model (ViTs such as DINOv2/DINOv3/CLIP/SigLIP/MAE/DeiT, and CNNs such as ResNet/ConvNeXt) and
returns the feature maps of chosen layers as ``(B, C, h, w)`` tensors. Everything it knows about
the model (channels, stride, normalisation, prefix tokens) comes from timm's own metadata
(``feature_info``, ``pretrained_cfg``) and feature API (``forward_intermediates``); nothing is
inferred from the model's name.

The module is framework-free (only ``torch`` and ``timm``) so that the MMSegmentation and
Detectron2 backbones and the AnyUp trainer can all build on it.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyup_plugin.constants import IMAGENET_MEAN, IMAGENET_STD

from .checkpoints import check_state_dict_fits, read_checkpoint, state_dict_mismatch
from .checks import check_image

__all__ = ['FrozenTimmEncoder']

logger = logging.getLogger(__name__)

# Model-name prefixes that timm resolves itself (remote or local configs); not checked against
# timm's registry.
_TIMM_SOURCE_PREFIXES = ('hf-hub:', 'hf_hub:', 'local-dir:')


def _import_timm() -> Any:
    # Imported lazily so that importing this module stays cheap and free of side effects.
    import timm

    return timm


def _check_model_name(model_name: str) -> None:
    """Raises ``ValueError`` listing close matches when timm does not know ``model_name``."""
    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f'model_name must be a non-empty timm model name, got {model_name!r}')
    if model_name.startswith(_TIMM_SOURCE_PREFIXES):
        return
    timm = _import_timm()
    arch, tag = timm.models.split_model_name_tag(model_name)
    if timm.is_model(arch):
        if tag and model_name not in timm.list_pretrained(f'{arch}.*'):
            tags = [name.split('.', 1)[1] for name in timm.list_pretrained(f'{arch}.*')]
            raise ValueError(
                f'model_name {model_name!r}: timm has no pretrained tag {tag!r} for {arch!r} '
                f'(available: {", ".join(tags) or "none"})'
            )
        return
    candidates = set(timm.list_models()) | set(timm.list_models(pretrained=True))
    matches = difflib.get_close_matches(model_name, sorted(candidates), n=8, cutoff=0.5)
    hint = f'close matches: {", ".join(matches)}' if matches else 'no close match found'
    raise ValueError(
        f'model_name {model_name!r} is not a timm model ({hint}); '
        "see timm.list_models('*pattern*') for the full list"
    )


def _normalise_layers(layers: Sequence[int] | int, num_layers: int) -> list[int]:
    """Turns user layer indices (negative allowed) into absolute indices, keeping the order."""
    if isinstance(layers, int) and not isinstance(layers, bool):
        items: list[object] = [layers]
    elif isinstance(layers, Sequence) and not isinstance(layers, str):
        items = list(layers)
    else:
        raise ValueError(f'layers must be an int or a sequence of ints, got {layers!r}')
    if not items:
        raise ValueError('layers must name at least one layer, got an empty sequence')
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise ValueError(f'layers must contain ints, got {item!r} in {layers!r}')
        if not -num_layers <= item < num_layers:
            raise ValueError(
                f'layers index {item} is out of range: this model has {num_layers} feature '
                f'layers, so expected an index in [{-num_layers}, {num_layers - 1}]'
            )
        out.append(item % num_layers)
    return out


def _check_norm_stats(value: Sequence[float], name: str, positive: bool) -> tuple[float, ...]:
    try:
        stats = tuple(float(v) for v in value)
    except TypeError as exc:
        raise ValueError(f'{name} must be a sequence of 3 floats, got {value!r}') from exc
    if len(stats) != 3:
        raise ValueError(f'{name} must have 3 values (one per RGB channel), got {value!r}')
    if not all(math.isfinite(v) for v in stats) or (positive and any(v <= 0 for v in stats)):
        expected = 'finite positive' if positive else 'finite'
        raise ValueError(f'{name} must hold {expected} values, got {value!r}')
    return stats


def _model_filter_fn(model: nn.Module) -> Callable[..., Any] | None:
    """timm's checkpoint filter for the model's architecture (remaps original checkpoints)."""
    module = sys.modules.get(type(model).__module__)
    fn = getattr(module, 'checkpoint_filter_fn', None)
    return fn if callable(fn) else None


def _weights_source(model_name: str) -> str:
    """Where timm's pretrained weights of ``model_name`` can be downloaded from."""
    try:
        cfg = _import_timm().models.get_pretrained_cfg(model_name)
    except Exception:  # unknown names were rejected earlier; be safe in error paths
        cfg = None
    if cfg is not None and cfg.hf_hub_id:
        return f'https://huggingface.co/{cfg.hf_hub_id} (its model.safetensors)'
    if cfg is not None and cfg.url:
        return cfg.url
    return f"timm (timm.create_model('{model_name}', pretrained=True), then save its state_dict)"


def _strip_wrapper_prefix(
    state_dict: dict[str, Any], reference: Mapping[str, Tensor]
) -> dict[str, Any]:
    """Removes the ``'model.'`` prefix of a checkpoint saved from this wrapper."""
    if not any(k in reference for k in state_dict) and all(
        k.startswith('model.') for k in state_dict
    ):
        return {k[len('model.') :]: v for k, v in state_dict.items()}
    return state_dict


class FrozenTimmEncoder(nn.Module):
    """A frozen timm model that returns dense feature maps of chosen layers.

    The encoder takes images normalised with ``input_mean``/``input_std`` (ImageNet statistics
    by default, what AnyUp's guidance image uses too), re-normalises them to the statistics the
    timm model expects (from ``timm.data.resolve_model_data_config``), pads them on the bottom and
    right to a multiple of the coarsest selected stride, runs timm's ``forward_intermediates``
    and crops each map back to ``ceil(H / s) x ceil(W / s)`` for that layer's stride ``s``.
    Prefix tokens (CLS, registers, distillation tokens) are dropped by timm.

    The encoder is frozen: every parameter has ``requires_grad=False``, it stays in eval mode
    whatever :meth:`train` is called with, and :meth:`forward` runs under ``torch.no_grad()``
    (not inference mode, so the outputs can still enter autograd graphs built later).

    Args:
        model_name: Any timm model name, optionally with a pretrained tag (e.g.
            ``'vit_base_patch16_clip_224.openai'``; the tag selects the normalisation and the
            weights timm would download).
        layers: Feature layer indices (negative counts from the end); one int or a sequence.
            For ViTs these are transformer blocks, for CNNs timm's feature stages (the entries of
            ``model.feature_info``). Unlike timm's ``indices``, an int selects one layer.
        apply_norm: Apply the model's final norm to the selected features (timm's ``norm=True``
            for ViTs; CNN stages are passed the same flag, which most ignore).
        pretrained: Load timm's pretrained weights (needs network access or timm's cache).
        checkpoint: Path to a local checkpoint: a state dict, or a dict holding one under
            ``'state_dict'`` or ``'model'`` (``.safetensors`` too). Original-format checkpoints
            are remapped with timm's filter for the architecture when their keys do not match.
        input_mean: Per-channel mean the input images were normalised with.
        input_std: Per-channel standard deviation the input images were normalised with.
        **timm_kwargs: Passed to ``timm.create_model`` (e.g. ``img_size``). ViTs are created with
            ``dynamic_img_size=True`` unless given, and every model with ``num_classes=0``.

    Attributes:
        model: The wrapped timm model.
        layers: Absolute indices of the selected layers, in the requested order.
        out_channels: Channels of each returned map.
        strides: Stride (pixels per feature cell) of each returned map.
        patch_size: The coarsest selected stride; input is padded to a multiple of it. For ViTs
            it is the patch size.
        num_prefix_tokens: Tokens timm drops before the patch tokens (0 for CNNs).
        model_mean: Normalisation mean the timm model expects.
        model_std: Normalisation standard deviation the timm model expects.

    Raises:
        ValueError: Unknown model name (with close matches), bad layers or statistics, or both
            ``pretrained`` and ``checkpoint``.
        FileNotFoundError: ``checkpoint`` does not exist.
        CheckpointReadError: ``checkpoint`` cannot be read (a ``ValueError``; see
            :mod:`~anyup_plugin.core.checkpoints`).
        CheckpointMismatchError: ``checkpoint``'s keys do not match (a ``ValueError``).
        RuntimeError: ``pretrained=True`` and timm could not load the weights (e.g. offline).
    """

    def __init__(
        self,
        model_name: str,
        layers: Sequence[int] | int = -1,
        apply_norm: bool = True,
        pretrained: bool = False,
        checkpoint: str | os.PathLike[str] | None = None,
        input_mean: Sequence[float] = IMAGENET_MEAN,
        input_std: Sequence[float] = IMAGENET_STD,
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        _check_model_name(model_name)
        if pretrained and checkpoint is not None:
            raise ValueError(
                'pass either pretrained=True (timm downloads the weights) or checkpoint=<path>, '
                f'not both (got checkpoint={str(checkpoint)!r})'
            )
        self.input_mean = _check_norm_stats(input_mean, 'input_mean', positive=False)
        self.input_std = _check_norm_stats(input_std, 'input_std', positive=True)
        self.model_name = model_name
        self.apply_norm = bool(apply_norm)

        self.model = self._create_model(model_name, pretrained, timm_kwargs)
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)

        if not callable(getattr(self.model, 'forward_intermediates', None)):
            raise ValueError(
                f'timm model {model_name!r} ({type(self.model).__name__}) has no '
                'forward_intermediates(); FrozenTimmEncoder needs timm models that implement it'
            )
        feature_info = self._feature_info(self.model)
        self.num_feature_layers = len(feature_info)
        self.layers = _normalise_layers(layers, self.num_feature_layers)
        self.out_channels = [int(feature_info[i]['num_chs']) for i in self.layers]
        self.strides = [int(feature_info[i]['reduction']) for i in self.layers]
        self.patch_size = max(self.strides)
        self.num_prefix_tokens = int(getattr(self.model, 'num_prefix_tokens', 0) or 0)
        # Sorted unique indices for timm (which returns them in block order), and the position of
        # each requested layer in timm's output.
        self._take = sorted(set(self.layers))
        self._order = [self._take.index(i) for i in self.layers]
        self._fi_kwargs = self._forward_intermediates_kwargs()

        timm = _import_timm()
        data_config = timm.data.resolve_model_data_config(self.model)
        self.model_mean = _check_norm_stats(data_config['mean'], 'model mean', positive=False)
        self.model_std = _check_norm_stats(data_config['std'], 'model std', positive=True)
        in_mean, in_std = torch.tensor(self.input_mean), torch.tensor(self.input_std)
        m_mean, m_std = torch.tensor(self.model_mean), torch.tensor(self.model_std)
        self.renormalises = not (
            torch.allclose(in_mean, m_mean, atol=1e-7) and torch.allclose(in_std, m_std, atol=1e-7)
        )
        # x_model = (x_in * std_in + mean_in - mean_model) / std_model = x_in * scale + shift
        self.register_buffer('_scale', (in_std / m_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer(
            '_shift', ((in_mean - m_mean) / m_std).view(1, 3, 1, 1), persistent=False
        )

        for param in self.model.parameters():
            param.requires_grad_(False)
        super().train(False)
        logger.info(
            'FrozenTimmEncoder %s: layers %s, channels %s, strides %s, renormalise %s',
            model_name,
            self.layers,
            self.out_channels,
            self.strides,
            self.renormalises,
        )

    # ------------------------------------------------------------------ construction helpers

    @staticmethod
    def _create_model(model_name: str, pretrained: bool, timm_kwargs: dict[str, Any]) -> nn.Module:
        timm = _import_timm()
        kwargs = dict(timm_kwargs)
        kwargs.setdefault('num_classes', 0)
        dynamic_requested = 'dynamic_img_size' in kwargs
        kwargs.setdefault('dynamic_img_size', True)

        def create(**kw: Any) -> nn.Module:
            return timm.create_model(model_name, pretrained=pretrained, **kw)

        try:
            try:
                return create(**kwargs)
            except TypeError as exc:
                # Models without variable-size token grids (CNNs) do not take the argument.
                if dynamic_requested or 'dynamic_img_size' not in str(exc):
                    raise
                kwargs.pop('dynamic_img_size')
                return create(**kwargs)
        except TypeError:
            raise
        except Exception as exc:
            if not pretrained:
                raise
            raise RuntimeError(
                f'could not load timm pretrained weights for {model_name!r} '
                f'({type(exc).__name__}: {exc}). If this machine cannot download them, '
                f'download them on a machine with internet from {_weights_source(model_name)}, '
                'put the file on this machine (e.g. checkpoints/) and pass '
                'checkpoint=<that file> instead of pretrained=True'
            ) from exc

    @staticmethod
    def _feature_info(model: nn.Module) -> list[dict[str, Any]]:
        info = getattr(model, 'feature_info', None)
        if not info:
            raise ValueError(
                f'timm model {type(model).__name__} has no feature_info; cannot tell its feature '
                'layers, channels and strides'
            )
        return [dict(entry) for entry in info]

    def _forward_intermediates_kwargs(self) -> dict[str, Any]:
        params = inspect.signature(self.model.forward_intermediates).parameters
        kwargs: dict[str, Any] = {
            'indices': list(self._take),
            'output_fmt': 'NCHW',
            'intermediates_only': True,
        }
        if 'norm' in params:
            kwargs['norm'] = self.apply_norm
        elif self.apply_norm:
            logger.debug('%s.forward_intermediates has no norm argument', type(self.model).__name__)
        if 'stop_early' in params:
            kwargs['stop_early'] = True
        return kwargs

    def load_checkpoint(self, checkpoint: str | os.PathLike[str]) -> None:
        """Loads weights from a local checkpoint into the timm model, strictly.

        Accepts a plain state dict or one under ``'state_dict'``/``'model'`` (timm also prefers
        ``'state_dict_ema'``/``'model_ema'`` when present), with or without a ``'module.'``
        (DDP) or ``'model.'`` (this wrapper) prefix. Classifier weights are ignored when the
        model has no classifier. When the keys do not match the model directly, timm's
        checkpoint filter for the architecture is applied (it converts e.g. original DINOv2 or
        OpenCLIP checkpoints and resizes position embeddings).

        Args:
            checkpoint: Path to the checkpoint file (``torch.save`` output or ``.safetensors``).

        Raises:
            FileNotFoundError: The file does not exist (the message says where to download
                the weights and where to put them).
            CheckpointReadError: The file cannot be read (truncated, corrupt, not weights); the
                message names it and what a valid one is, and the reader's error is the cause.
            ValueError: The file holds no state dict.
            CheckpointMismatchError: Keys are missing, unexpected or of the wrong shape (all
                named in the message).
        """
        path = os.fspath(checkpoint)
        reference = self.model.state_dict()
        state_dict = self._drop_unused_classifier(
            _strip_wrapper_prefix(self._read_state_dict(path), reference), reference
        )
        state_dict = self._match_with_timm_filter(state_dict, reference, path)
        check_state_dict_fits(
            state_dict, reference, f'checkpoint {path!r}', f'timm model {self.model_name!r}'
        )
        self.model.load_state_dict(state_dict, strict=True)
        logger.info('Loaded %d tensors from %s into %s', len(state_dict), path, self.model_name)

    def _read_state_dict(self, path: str) -> dict[str, Any]:
        """Reads ``path`` with timm's loader (tensors only), as a dict of named tensors."""
        timm = _import_timm()
        load_kwargs: dict[str, Any] = {'use_ema': True}
        if 'weights_only' in inspect.signature(timm.models.load_state_dict).parameters:
            load_kwargs['weights_only'] = True  # never unpickle arbitrary objects
        valid = (
            'a state dict saved by torch.save, or a .safetensors file, with the weights of timm '
            f"model {self.model_name!r} (timm's own model.safetensors, or an original checkpoint "
            "that timm's filter for the architecture converts)"
        )
        state_dict = read_checkpoint(
            path,
            lambda name: timm.models.load_state_dict(name, **load_kwargs),
            what='backbone checkpoint',
            valid=valid,
            where_to_get=(
                f'Download the weights of timm model {self.model_name!r} on a machine with '
                f'internet, from {_weights_source(self.model_name)}, and place the file at {path}'
            ),
        )
        if not isinstance(state_dict, Mapping) or not all(isinstance(k, str) for k in state_dict):
            raise ValueError(
                f'backbone checkpoint {path!r} does not hold a state dict (got '
                f'{type(state_dict).__name__}). A valid one is {valid}.'
            )
        return dict(state_dict)

    def _match_with_timm_filter(
        self, state_dict: dict[str, Any], reference: Mapping[str, Tensor], path: str
    ) -> dict[str, Any]:
        """Applies timm's checkpoint filter when the keys do not match the model as they are.

        Returns whichever of the original and the filtered state dict matches the model better.
        """
        mismatch = state_dict_mismatch(state_dict, reference)
        filter_fn = _model_filter_fn(self.model)
        if not mismatch or filter_fn is None:
            return state_dict
        # Not timm's own key layout: let timm's filter for the architecture remap it.
        try:
            try:
                filtered = filter_fn(dict(state_dict), self.model)
            except TypeError:  # older filters take only the state dict
                filtered = filter_fn(dict(state_dict))
        except Exception as exc:  # timm's filters assume their own source formats
            logger.debug('timm checkpoint filter failed on %s: %s', path, exc)
            return state_dict
        filtered = self._drop_unused_classifier(dict(filtered), reference)
        if state_dict_mismatch(filtered, reference).count < mismatch.count:
            return filtered
        return state_dict

    def _drop_unused_classifier(
        self, state_dict: dict[str, Any], reference: Mapping[str, Tensor]
    ) -> dict[str, Any]:
        classifiers = getattr(self.model, 'pretrained_cfg', {}).get('classifier') or ()
        if isinstance(classifiers, str):
            classifiers = (classifiers,)
        prefixes = tuple(f'{name}.' for name in classifiers)
        if not prefixes:
            return state_dict
        return {k: v for k, v in state_dict.items() if k in reference or not k.startswith(prefixes)}

    # ------------------------------------------------------------------------- behaviour

    def train(self, mode: bool = True) -> FrozenTimmEncoder:
        """Keeps the encoder in eval mode whatever ``mode`` is (it is frozen).

        Args:
            mode: Ignored.

        Returns:
            The encoder.
        """
        return super().train(False)

    def feature_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Feature map sizes :meth:`forward` returns for a ``height x width`` input.

        Args:
            height: Image height in pixels.
            width: Image width in pixels.

        Returns:
            ``(ceil(height / s), ceil(width / s))`` for each selected layer's stride ``s``.
        """
        return [(math.ceil(height / s), math.ceil(width / s)) for s in self.strides]

    @torch.no_grad()
    def forward(self, image: Tensor) -> list[Tensor]:
        """Computes the feature maps of the selected layers.

        Args:
            image: (B, 3, H, W) images normalised with ``input_mean``/``input_std``; any
                H, W >= 1.

        Returns:
            One (B, C_i, ceil(H / s_i), ceil(W / s_i)) tensor per selected layer, in the order
            of ``layers``, with C_i = ``out_channels[i]`` and s_i = ``strides[i]``.

        Raises:
            ValueError: ``image`` is not a finite floating-point (B, 3, H, W) tensor with
                non-zero sizes.
        """
        return self.extract_features(image)

    def extract_features(self, image: Tensor) -> list[Tensor]:
        """Like :meth:`forward`, but without ``torch.no_grad``.

        For callers that unfreeze part of :attr:`model` (set ``requires_grad`` on some of its
        parameters) and need gradients to reach them; frozen parts record no graph as long as
        the image does not require grad. The module still stays in eval mode.

        Args:
            image: (B, 3, H, W) images normalised with ``input_mean``/``input_std``.

        Returns:
            The same list of feature maps as :meth:`forward`.
        """
        check_image(image, 'image')
        height, width = image.shape[-2:]
        x = image
        if self.renormalises:
            x = x * self._scale.to(x.dtype) + self._shift.to(x.dtype)
        pad_h = (-height) % self.patch_size
        pad_w = (-width) % self.patch_size
        if pad_h or pad_w:
            # Zero in the model's normalisation is its mean colour.
            x = F.pad(x, (0, pad_w, 0, pad_h))
        feats = self.model.forward_intermediates(x, **self._fi_kwargs)
        if len(feats) != len(self._take):
            raise RuntimeError(
                f'{type(self.model).__name__}.forward_intermediates returned {len(feats)} maps for '
                f'indices {self._take}; expected {len(self._take)}'
            )
        out = []
        for pos, (h, w) in zip(self._order, self.feature_sizes(height, width)):
            out.append(feats[pos][..., :h, :w])
        return out

    def extra_repr(self) -> str:
        return (
            f'model_name={self.model_name!r}, layers={self.layers}, '
            f'out_channels={self.out_channels}, strides={self.strides}, '
            f'apply_norm={self.apply_norm}, renormalises={self.renormalises}'
        )
