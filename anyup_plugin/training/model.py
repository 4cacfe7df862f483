"""The AnyUp training model: a student :class:`~anyup_plugin.core.AnyUp` and frozen teachers.

One training step (``mode='loss'``), for a batch of (B, 3, 448, 448) images:

1. choose a teacher (:class:`~anyup_plugin.training.teachers.TeacherPool`), patch size p;
2. :class:`~anyup_plugin.training.multicrop.MultiCrop`: the whole image at 224 (guidance and
   teacher input) and 4 patch-aligned 224 crops per image;
3. teacher features: low-res ``lr`` (B, C, 224/p, 224/p) of the whole image, targets ``hr``
   (B*4, C, 224/p, 224/p) of the crops;
4. ``pred = student(guidance, lr, 448/p)`` and each crop's window of it against ``hr``:
   ``loss_crop = w_crop * (cosine + min-max MSE)``;
5. self-consistency: ``student(augmented guidance, lr, 224)`` against
   ``student(guidance, lr, 224)`` computed without gradient, weighted ``w_self`` (0.1);
6. input consistency: ``pred`` area-downsampled to ``lr``'s size against ``lr``, weighted
   ``w_input`` (0.1).

Every weighted term (``loss_*``) is summed by MMEngine and logged, and so are the unweighted
cosine and MSE parts (``crop_cos``, ``crop_mse``, ...).

Validation (``mode='predict'``) scores every teacher on held-out images with fixed crops: the
reconstruction loss and the mean per-pixel cosine similarity to the crop targets, for the
student and for bilinear upsampling of the same low-res features (see
:class:`~anyup_plugin.training.metric.UpsamplingMetric`).

The teachers are frozen and rebuilt from the config at every start, so they are kept out of
``state_dict()``, ``parameters()`` (hence the optimizer and DDP) and ``train()``; ``to()``,
``cuda()`` and the other ``_apply`` conversions still reach them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.model import BaseDataPreprocessor, BaseModel
from torch import Tensor, nn

from anyup_plugin.constants import IMAGENET_MEAN, IMAGENET_STD
from anyup_plugin.core import AnyUp
from anyup_plugin.utils.deprecation import deprecated_alias

from .losses import reconstruction_loss
from .multicrop import MultiCrop, crop_feature_windows, offsets_from_keys
from .registry import MODELS, build_model
from .teachers import Teacher, TeacherPool, build_teachers

__all__ = ['AnyUpDataPreprocessor', 'AnyUpDistillationModel']

MODELS.register_module(name='AnyUp', module=AnyUp)

DEFAULT_LOSS_WEIGHTS = {'crop': 1.0, 'self_consistency': 0.1, 'input_consistency': 0.1}


@MODELS.register_module()
class AnyUpDataPreprocessor(BaseDataPreprocessor):
    """Moves a batch to the device and normalises its images.

    Images arrive as uint8 (0-255) or floating point in [0, 1] and leave as float32
    ``(x - mean) / std``. Both ``inputs`` and the ``guidance_aug`` entry of ``data_samples``
    (if present) are normalised.

    Args:
        mean: Per-channel mean in [0, 1] units (ImageNet's by default, what AnyUp expects).
        std: Per-channel standard deviation in [0, 1] units.
        non_blocking: Asynchronous host-to-device copies.
    """

    def __init__(
        self,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        non_blocking: bool = False,
    ) -> None:
        super().__init__(non_blocking)
        self.register_buffer(
            'mean', torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), False
        )
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), False)

    def normalise(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) uint8 or [0, 1] float -> normalised float32."""
        x = images.float()
        if images.dtype == torch.uint8:
            x = x / 255.0
        return (x - self.mean) / self.std

    def forward(self, data: dict, training: bool = False) -> dict[str, Any]:
        """Returns ``{'inputs': (B, 3, S, S), 'data_samples': dict}`` on the device."""
        data = self.cast_data(data)
        inputs = data['inputs']
        if isinstance(inputs, (list, tuple)):
            inputs = torch.stack(list(inputs))
        samples = dict(data.get('data_samples') or {})
        guidance_aug = samples.get('guidance_aug')
        if isinstance(guidance_aug, (list, tuple)):
            guidance_aug = torch.stack(list(guidance_aug))
        if guidance_aug is not None:
            samples['guidance_aug'] = self.normalise(guidance_aug)
        return {'inputs': self.normalise(inputs), 'data_samples': samples}


@MODELS.register_module()
class AnyUpDistillationModel(BaseModel):
    """An AnyUp student and the frozen teachers it learns to upsample: the model MMEngine trains.

    Its ``loss`` mode is one distillation step (see the module docstring), its ``predict``
    mode the validation scores. Configs name it ``type='AnyUpDistillationModel'``
    (``'AnyUpTrainer'``, its old name, still builds it and warns).

    Args:
        student: The student (an :class:`AnyUp` or its config, e.g.
            ``dict(type='AnyUp', window_ratio=0.1)``).
        teachers: One teacher, a list, or a dict ``name -> teacher`` (see
            :func:`~anyup_plugin.training.teachers.build_teachers`).
        multi_crop: The :class:`MultiCrop` config (input size, crop size, crops per image).
        loss_weights: Weights of ``crop``, ``self_consistency`` and ``input_consistency``
            (defaults 1.0, 0.1, 0.1); a weight of 0 skips that term's computation.
        self_consistency_size: Output side length of the self-consistency term; default the
            guidance size (224).
        teacher_sampling: ``'patch_size'`` or ``'uniform'`` (see :class:`TeacherPool`).
        val_seed: Seed of the fixed validation crops (per image file).
        data_preprocessor: The data preprocessor config.
        init_cfg: MMEngine initialisation config.

    Raises:
        ValueError: A teacher whose patch size does not divide the crop, input or image size
            (checked against ``image_size`` when given), unknown loss weights.
    """

    def __init__(
        self,
        student: nn.Module | Mapping[str, Any],
        teachers: Any,
        multi_crop: MultiCrop | Mapping[str, Any] | None = None,
        loss_weights: Mapping[str, float] | None = None,
        self_consistency_size: int | None = None,
        teacher_sampling: str = 'patch_size',
        image_size: int | None = None,
        val_seed: int = 0,
        data_preprocessor: Mapping[str, Any] | nn.Module | None = None,
        init_cfg: Any = None,
    ) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type='AnyUpDataPreprocessor')
        if isinstance(data_preprocessor, Mapping):
            data_preprocessor = build_model(data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.student = build_model(student) if isinstance(student, Mapping) else student
        # AnyUp's one trainability policy: the never-used parameters stay frozen, so DDP does
        # not wait for their gradients.
        self.student.set_trainable(True)

        if multi_crop is None:
            multi_crop = dict(type='MultiCrop')
        if isinstance(multi_crop, Mapping):
            multi_crop = build_model(multi_crop)
        self.multi_crop = multi_crop

        teacher_list = build_teachers(teachers)
        for teacher in teacher_list:
            self.multi_crop.check_patch_size(
                teacher.patch_size,
                image_size if image_size is not None else self.multi_crop.crop_size,
                name=f'teacher {teacher.name!r}',
            )
        # A plain list: not a submodule (see the module docstring).
        self._teachers: list[Teacher] = teacher_list
        self.teacher_pool = TeacherPool(teacher_list, teacher_sampling)

        weights = dict(DEFAULT_LOSS_WEIGHTS)
        unknown = set(loss_weights or {}) - set(weights)
        if unknown:
            raise ValueError(f'unknown loss weights {sorted(unknown)}; known: {sorted(weights)}')
        weights.update({k: float(v) for k, v in (loss_weights or {}).items()})
        self.loss_weights = weights
        self.self_consistency_size = self_consistency_size
        self.image_size = image_size
        self.val_seed = int(val_seed)
        self.register_load_state_dict_pre_hook(self._accept_plain_student_state_dict)

    # ------------------------------------------------------------------ teachers
    @property
    def teachers(self) -> list[Teacher]:
        """The frozen teachers (not submodules)."""
        return self._teachers

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> AnyUpDistillationModel:
        super()._apply(fn, *args, **kwargs)
        for teacher in self._teachers:
            teacher._apply(fn, *args, **kwargs)
        return self

    @staticmethod
    def _accept_plain_student_state_dict(
        module: nn.Module, state_dict: dict, prefix: str, *args: Any
    ) -> None:
        """Lets a plain AnyUp state dict (published or exported) load into ``student``."""
        student_prefix = prefix + 'student.'
        if any(k.startswith(student_prefix) for k in state_dict):
            return
        if prefix + 'rope.freqs' not in state_dict:
            return
        for key in [k for k in state_dict if k.startswith(prefix)]:
            state_dict[student_prefix + key[len(prefix) :]] = state_dict.pop(key)

    # ------------------------------------------------------------------ forward
    def forward(
        self, inputs: Tensor, data_samples: dict[str, Any] | None = None, mode: str = 'tensor'
    ) -> Any:
        """MMEngine's entry point.

        Args:
            inputs: (B, 3, S, S) normalised square images.
            data_samples: ``{'img_path': [...], 'guidance_aug': (B, 3, s, s)}`` (the augmented
                guidance is needed for ``'loss'`` when the self-consistency weight is > 0).
            mode: ``'loss'`` (dict of losses), ``'predict'`` (per-image validation scores) or
                ``'tensor'`` (the student's upsampled features of the first teacher).

        Returns:
            Depends on ``mode``, see above.
        """
        if mode == 'loss':
            return self.loss(inputs, data_samples or {})
        if mode == 'predict':
            return self.predict(inputs, data_samples or {})
        if mode == 'tensor':
            teacher = self._teachers[0]
            views = self.multi_crop(inputs, teacher.patch_size)
            low_res = teacher(views.guidance)
            return self.student(views.guidance, low_res, views.output_size)
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    def loss(self, inputs: Tensor, data_samples: dict[str, Any]) -> dict[str, Tensor]:
        """One training step's losses (see the module docstring)."""
        teacher = self._teachers[self.teacher_pool.sample()]
        views = self.multi_crop(inputs, teacher.patch_size)
        with torch.no_grad():
            low_res = teacher(views.guidance)
            targets = teacher(views.crops.flatten(0, 1))
        weights = self.loss_weights
        pred = self.student(views.guidance, low_res, views.output_size)
        pred_crops = crop_feature_windows(pred, views.offsets, views.crop_patches)
        crop = reconstruction_loss(pred_crops, targets)
        losses = {
            'loss_crop': weights['crop'] * crop.total,
            'crop_cos': crop.cosine.detach(),
            'crop_mse': crop.mse.detach(),
        }
        if weights['self_consistency'] > 0:
            guidance_aug = data_samples.get('guidance_aug')
            if guidance_aug is None:
                raise ValueError(
                    'the self-consistency loss needs data_samples["guidance_aug"]: add '
                    "GuidanceAugmentation and PackAnyUpInputs(keys=['guidance_aug']) to the "
                    'training pipeline, or set loss_weights.self_consistency=0'
                )
            if guidance_aug.shape != views.guidance.shape:
                raise ValueError(
                    f'augmented guidance {tuple(guidance_aug.shape)} does not match the '
                    f'guidance {tuple(views.guidance.shape)}: GuidanceAugmentation.size must '
                    'equal MultiCrop.input_size'
                )
            size = self.self_consistency_size or views.guidance.shape[-1]
            pred_aug = self.student(guidance_aug, low_res, size)
            with torch.no_grad():
                reference = self.student(views.guidance, low_res, size)
            consistency = reconstruction_loss(pred_aug, reference.detach())
            losses['loss_self_consistency'] = weights['self_consistency'] * consistency.total
            losses['self_cos'] = consistency.cosine.detach()
            losses['self_mse'] = consistency.mse.detach()
        if weights['input_consistency'] > 0:
            down = F.interpolate(pred, size=low_res.shape[-2:], mode='area')
            consistency = reconstruction_loss(down, low_res)
            losses['loss_input_consistency'] = weights['input_consistency'] * consistency.total
            losses['input_cos'] = consistency.cosine.detach()
            losses['input_mse'] = consistency.mse.detach()
        return losses

    @torch.no_grad()
    def predict(self, inputs: Tensor, data_samples: dict[str, Any]) -> list[dict[str, float]]:
        """Per-image validation scores of the student and of bilinear upsampling.

        Every teacher is scored on the same images; crops are fixed per image file (a hash of
        its path and ``val_seed``), so successive validations compare like with like.

        Returns:
            One dict per image: ``'<teacher>/student/loss'``, ``'<teacher>/student/cosine'``,
            ``'<teacher>/bilinear/loss'``, ``'<teacher>/bilinear/cosine'`` for each teacher.
        """
        b = inputs.shape[0]
        keys = data_samples.get('img_path') or [str(i) for i in range(b)]
        results: list[dict[str, float]] = [{} for _ in range(b)]
        k = self.multi_crop.num_crops
        for teacher in self._teachers:
            p = teacher.patch_size
            offsets = offsets_from_keys(
                keys, k, self.multi_crop.max_offset(inputs.shape[-1], p), self.val_seed
            )
            views = self.multi_crop(inputs, p, offsets=offsets)
            low_res = teacher(views.guidance)
            targets = teacher(views.crops.flatten(0, 1))
            size = (views.output_size, views.output_size)
            candidates = {
                'student': self.student(views.guidance, low_res, size),
                'bilinear': F.interpolate(low_res, size=size, mode='bilinear', align_corners=False),
            }
            for method, full in candidates.items():
                windows = crop_feature_windows(full, views.offsets, views.crop_patches)
                terms = reconstruction_loss(windows, targets, per_sample=True)
                loss = terms.total.view(b, k).mean(dim=1).tolist()
                cosine = (1.0 - terms.cosine).view(b, k).mean(dim=1).tolist()
                for i in range(b):
                    results[i][f'{teacher.name}/{method}/loss'] = loss[i]
                    results[i][f'{teacher.name}/{method}/cosine'] = cosine[i]
        return results


#: The name this model had in configs before: ``dict(type='AnyUpTrainer')`` still builds it,
#: with a ``DeprecationWarning``.
AnyUpTrainer = MODELS.register_module(
    name='AnyUpTrainer', module=deprecated_alias(AnyUpDistillationModel, 'AnyUpTrainer')
)
