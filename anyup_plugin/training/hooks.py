"""Hooks of the AnyUp trainer."""

from __future__ import annotations

import os
import os.path as osp
from typing import Any

import torch
from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from anyup_plugin.core.hub import hyper_parameters_path, save_pretrained

from .registry import HOOKS

__all__ = ['ExportStudentHook']


@HOOKS.register_module()
class ExportStudentHook(Hook):
    """Saves the student's weights as a plain state dict, next to MMEngine's checkpoints.

    Files (in ``out_dir``, default the work directory): ``anyup_student_iter_<n>.pth`` every
    ``interval`` iterations and at the end of training, and ``anyup_student_latest.pth``, a
    copy of the newest. They are plain state dicts with the published key names, each with
    its hyper-parameters in a ``.json`` file of the same name beside it
    (:func:`~anyup_plugin.core.hub.save_pretrained`), so
    ``AnyUp.from_pretrained('work_dirs/.../anyup_student_latest.pth')`` rebuilds and loads
    the student whatever its widths.

    Args:
        interval: Save every this many training iterations (<= 0: only at the end).
        out_dir: Output folder; default ``runner.work_dir``.
        max_keep: Keep at most this many ``anyup_student_iter_*.pth`` files (<= 0: all).
        attribute: Name of the student submodule of the training model.
    """

    priority = 'LOW'

    def __init__(
        self,
        interval: int = 5000,
        out_dir: str | None = None,
        max_keep: int = -1,
        attribute: str = 'student',
    ) -> None:
        self.interval = interval
        self.out_dir = out_dir
        self.max_keep = max_keep
        self.attribute = attribute
        self._saved: list[str] = []
        self._last_iter = -1

    def _student(self, runner: Any) -> torch.nn.Module:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        return getattr(model, self.attribute)

    @master_only
    def _save(self, runner: Any, step: int) -> None:
        if step == self._last_iter:
            return
        self._last_iter = step
        out_dir = self.out_dir or runner.work_dir
        student = self._student(runner)
        path = osp.join(out_dir, f'anyup_student_iter_{step}.pth')
        save_pretrained(student, path)
        save_pretrained(student, osp.join(out_dir, 'anyup_student_latest.pth'))
        runner.logger.info(f'Saved the student as a plain state dict: {path}')
        self._saved.append(path)
        if self.max_keep > 0:
            while len(self._saved) > self.max_keep:
                old = self._saved.pop(0)
                for file in (old, hyper_parameters_path(old)):
                    if osp.exists(file):
                        os.remove(file)

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        """Saves every ``interval`` iterations."""
        if self.interval > 0 and self.every_n_train_iters(runner, self.interval):
            # runner.iter counts the iterations done before this one (like CheckpointHook's
            # iter_<n>.pth, the file is named after the iterations done including this one).
            self._save(runner, runner.iter + 1)

    def after_train(self, runner: Any) -> None:
        """Saves the final student (unless the last iteration already saved it)."""
        self._save(runner, runner.iter)
