"""End-to-end runs of the AnyUp trainer on this CPU: the tiny config, kill-and-resume, two
gloo processes, and bad input at start-up.

Every run uses a derived copy of ``configs/anyup/anyup_tiny_cpu_demo.py`` on synthetic images
made in ``tmp_path``: 64 px images, a random-weight 2-block ViT teacher with patch 4, a narrow
student. Runs go through the same functions as ``tools/train.py`` (``prepare_config`` and
``build_runner``) or through ``tools/train.py`` / ``tools/dist_train.sh`` in subprocesses.
"""

from __future__ import annotations

import copy
import glob
import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch

pytest.importorskip('mmengine', reason='the AnyUp trainer is built on MMEngine')
pytest.importorskip('timm', reason='the tiny teacher is a timm ViT')

from anyup_plugin.core import AnyUp
from anyup_plugin.engine import build_runner, is_complete_checkpoint, prepare_config
from anyup_plugin.testing import write_image_folder
from anyup_plugin.training import ImageFolderDataset

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / 'configs' / 'anyup' / 'anyup_tiny_cpu_demo.py'
TRAIN_TOOL = REPO / 'tools' / 'train.py'
DIST_TOOL = REPO / 'tools' / 'dist_train.sh'

# The tiny run: enough steps for the student to overtake bilinear upsampling on held-out images
# (with 3x the demo config's learning rate, for a short test).
MAX_ITERS = 80
CKPT_INTERVAL = 40
LR = 3e-3
# The interrupted run is killed between two checkpoints: iterations 41-45 are lost and redone.
KILL_AT = 45
LOSS_TERMS = ('loss_crop', 'loss_self_consistency', 'loss_input_consistency')
LOSS_PARTS = ('crop_cos', 'crop_mse', 'self_cos', 'self_mse', 'input_cos', 'input_mse')

KILL_HOOK = '''
"""Test-only hook: SIGKILLs its own process after a given training iteration."""
import os
import signal

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class KillAfterIterHook(Hook):
    priority = 'LOWEST'  # after the checkpoint hook of the same iteration

    def __init__(self, after_iter):
        self.after_iter = after_iter

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 >= self.after_iter:
            os.kill(os.getpid(), signal.SIGKILL)
'''


def write_config(path: Path, data_root: Path, **overrides: object) -> Path:
    """A config derived from the tiny demo config, on ``data_root``, loading in-process."""
    settings = dict(
        max_iters=MAX_ITERS,
        val_interval=CKPT_INTERVAL,
        ckpt_interval=CKPT_INTERVAL,
        lr=LR,
        workers=0,
        extra_hooks='',
        extra_imports='',
    )
    settings.update(overrides)
    text = f"""
    _base_ = [{str(TINY_CONFIG)!r}]
    custom_imports = dict(imports=['anyup_plugin.training'{settings['extra_imports']}])
    _data = dict(data_root={str(data_root)!r})
    train_dataloader = dict(
        num_workers={settings['workers']},
        persistent_workers=False,
        dataset=_data,
    )
    val_dataloader = dict(dataset=_data)
    test_dataloader = dict(dataset=_data)
    optim_wrapper = dict(optimizer=dict(lr={settings['lr']}))
    train_cfg = dict(max_iters={settings['max_iters']}, val_interval={settings['val_interval']})
    default_hooks = dict(
        logger=dict(interval=1),
        checkpoint=dict(interval={settings['ckpt_interval']}, max_keep_ckpts=-1),
    )
    custom_hooks = [
        dict(type='ExportStudentHook', interval={settings['ckpt_interval']}),
        {settings['extra_hooks']}
    ]
    """
    path.write_text(textwrap.dedent(text))
    return path


def run_in_process(config: Path, work_dir: Path, **cfg_options: object):
    """What ``tools/train.py CONFIG --work-dir WORK_DIR`` does; returns the trained runner."""
    cfg = prepare_config(
        str(config),
        work_dir=str(work_dir),
        # A unique name per run: MMEngine keys its logger and message hub by it.
        cfg_options={'experiment_name': f'test_{uuid.uuid4().hex[:8]}', **cfg_options},
    )
    runner = build_runner(cfg)
    runner.train()
    return runner


def read_scalars(work_dir: Path) -> list[dict]:
    """The records of every run's ``vis_data/scalars.json`` in ``work_dir``, oldest run first."""
    records = []
    for path in sorted(glob.glob(str(work_dir / '*' / 'vis_data' / 'scalars.json'))):
        with open(path, encoding='utf-8') as f:
            records.extend(json.loads(line) for line in f if line.strip())
    return records


def read_logs(work_dir: Path) -> str:
    return '\n'.join(
        Path(p).read_text(encoding='utf-8')
        for p in sorted(glob.glob(str(work_dir / '*' / '*.log')))
    )


def subprocess_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env['XDG_CACHE_HOME'] = str(tmp_path / 'cache')  # the dataset's size index
    env['PYTHONPATH'] = os.pathsep.join([str(tmp_path), str(REPO), env.get('PYTHONPATH', '')])
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def image_root(tmp_path_factory):
    """64 synthetic 64-px images, plus a non-image file and a truncated JPEG in the train split."""
    root = tmp_path_factory.mktemp('anyup_images')
    write_image_folder(str(root), num_images=64, min_size=64, seed=0, num_corrupt=1)
    # A JPEG whose header is intact but whose pixels are cut short: only loading finds out.
    train = ImageFolderDataset(
        str(root),
        min_size=64,
        split='train',
        holdout_fraction=0.15,
        index_file=str(tmp_path_factory.mktemp('index') / 'i.json'),
    )
    victim = next(
        Path(train.get_data_info(i)['img_path'])
        for i in range(len(train))
        if train.get_data_info(i)['img_path'].endswith('.jpg')
    )
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    return root, victim


@pytest.fixture(scope='module')
def cache_home(tmp_path_factory):
    """Keeps the dataset's size index out of the user's cache (in-process runs)."""
    folder = tmp_path_factory.mktemp('cache')
    old = os.environ.get('XDG_CACHE_HOME')
    os.environ['XDG_CACHE_HOME'] = str(folder)
    yield folder
    if old is None:
        os.environ.pop('XDG_CACHE_HOME', None)
    else:
        os.environ['XDG_CACHE_HOME'] = old


@pytest.fixture(scope='module')
def full_run(tmp_path_factory, image_root, cache_home):
    """The uninterrupted tiny run (in-process, with the demo config's one loader worker), shared
    by the tests below."""
    root, _ = image_root
    folder = tmp_path_factory.mktemp('full_run')
    config = write_config(folder / 'tiny.py', root, workers=1)
    work_dir = folder / 'work'
    runner = run_in_process(config, work_dir)
    return runner, config, work_dir


def _train_losses(records: list[dict]) -> dict[int, dict]:
    return {r['iter']: r for r in records if 'loss' in r and 'iter' in r}


def _val_metrics(records: list[dict]) -> dict[int, dict]:
    return {r['step']: r for r in records if 'upsampling/student/loss' in r}


@pytest.mark.slow
def test_tiny_run_learns_and_beats_bilinear_on_held_out_images(full_run, image_root):
    runner, _, work_dir = full_run
    assert runner.iter == MAX_ITERS

    train = _train_losses(read_scalars(work_dir))
    assert sorted(train) == list(range(1, MAX_ITERS + 1))
    # Every loss term and its unweighted parts are logged at every iteration.
    for record in train.values():
        for key in (*LOSS_TERMS, *LOSS_PARTS, 'loss'):
            assert key in record, f'{key} not logged: {sorted(record)}'
    # The training loss falls (window means of 10 iterations at the start and the end).
    first, last = train[10]['loss'], train[MAX_ITERS]['loss']
    assert last < 0.8 * first, f'training loss {first:.4f} -> {last:.4f}'
    # The crop term dominates and falls with it (the self-consistency term starts near 0: an
    # untrained student barely depends on its guidance image, so it is not expected to fall).
    assert train[MAX_ITERS]['loss_crop'] < 0.8 * train[10]['loss_crop']
    assert all(0 < train[MAX_ITERS][term] < 1 for term in LOSS_TERMS)

    # On held-out images the student is better than bilinear upsampling of the same features,
    # by both measures the metric logs side by side, and better than half-way through.
    val = _val_metrics(read_scalars(work_dir))
    assert sorted(val) == [CKPT_INTERVAL, MAX_ITERS]
    metrics = val[MAX_ITERS]
    assert metrics['upsampling/student/loss'] < val[CKPT_INTERVAL]['upsampling/student/loss']
    student, bilinear = metrics['upsampling/student/loss'], metrics['upsampling/bilinear/loss']
    assert student < bilinear, f'student loss {student:.4f} vs bilinear {bilinear:.4f}'
    cos_s, cos_b = metrics['upsampling/student/cosine'], metrics['upsampling/bilinear/cosine']
    assert cos_s > cos_b, f'student cosine {cos_s:.4f} vs bilinear {cos_b:.4f}'
    assert metrics['upsampling/cosine_gain'] == pytest.approx(cos_s - cos_b)

    # Bad files were skipped with warnings that name them, and training went on.
    root, victim = image_root
    log = read_logs(work_dir)
    assert f'skipping unreadable image {root / "shapes" / "corrupt_000.jpg"}' in log
    # The truncated image was drawn several times but is named once (no warning per epoch).
    assert log.count(f'skipping unreadable image {victim}') == 1


@pytest.mark.slow
def test_exported_student_is_a_plain_weights_only_state_dict(full_run):
    runner, _, work_dir = full_run
    # A copy in eval mode: the run belongs to the module-scoped fixture, shared by other tests.
    student = copy.deepcopy(runner.model.student).eval()
    for name in ('anyup_student_latest.pth', f'anyup_student_iter_{MAX_ITERS}.pth'):
        path = work_dir / name
        assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == []
        state = torch.load(path, weights_only=True)
        assert set(state) == set(student.state_dict())
        # The path alone rebuilds the narrow student (qk_dim=32 from the shapes, the rest
        # from the JSON beside it) and it upsamples as the trained one does.
        assert path.with_suffix('.json').is_file()
        loaded = AnyUp.from_pretrained(path)
        for key, value in student.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
        gen = torch.Generator().manual_seed(0)
        image, features = torch.randn(2, 3, 32, 32, generator=gen), torch.randn(2, 64, 8, 8)
        with torch.no_grad():
            assert torch.equal(loaded(image, features), student(image, features))
    assert (work_dir / f'anyup_student_iter_{CKPT_INTERVAL}.pth').is_file()
    # MMEngine's own checkpoint of the run loads with torch's weights_only default too.
    ckpt = torch.load(work_dir / f'iter_{MAX_ITERS}.pth', weights_only=True)
    assert ckpt['meta']['iter'] == MAX_ITERS


@pytest.mark.slow
def test_tools_test_scores_the_exported_student_like_the_run(full_run, tmp_path):
    """tools/test.py's path: the plain state dict loads into the trainer and scores what the
    run's last validation logged (logged values are this validation's, not running means)."""
    _, config, work_dir = full_run
    cfg = prepare_config(
        str(config),
        work_dir=str(tmp_path / 'test'),
        load_from=str(work_dir / 'anyup_student_latest.pth'),
        cfg_options={'experiment_name': f'test_{uuid.uuid4().hex[:8]}'},
    )
    metrics = build_runner(cfg).test()
    val = _val_metrics(read_scalars(work_dir))[MAX_ITERS]
    for key in ('student/loss', 'bilinear/loss', 'student/cosine'):
        assert metrics[f'upsampling/{key}'] == pytest.approx(val[f'upsampling/{key}'], rel=1e-4)


@pytest.fixture(scope='module')
def killed_and_resumed(tmp_path_factory, image_root):
    """tools/train.py killed (SIGKILL) part-way, then ``--resume`` without a value.

    Both processes load data as the demo config does (one worker), like the uninterrupted run.
    A kill while the next checkpoint was being written is imitated with a truncated newer file,
    which ``last_checkpoint`` names.
    """
    root, _ = image_root
    folder = tmp_path_factory.mktemp('killed_run')
    (folder / 'kill_hook.py').write_text(KILL_HOOK)
    config = write_config(folder / 'tiny.py', root, workers=1)
    kill_config = write_config(
        folder / 'tiny_kill.py',
        root,
        workers=1,
        extra_hooks=f"dict(type='KillAfterIterHook', after_iter={KILL_AT}),",
        extra_imports=", 'kill_hook'",
    )
    work_dir = folder / 'work'
    env = subprocess_env(folder)
    train = [sys.executable, str(TRAIN_TOOL)]
    killed = subprocess.run(
        [*train, str(kill_config), '--work-dir', str(work_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    killed_losses = _train_losses(read_scalars(work_dir))
    checkpoint = work_dir / f'iter_{CKPT_INTERVAL}.pth'
    assert is_complete_checkpoint(checkpoint)
    good = checkpoint.read_bytes()
    truncated = work_dir / f'iter_{KILL_AT}.pth'
    truncated.write_bytes(good[: len(good) // 2])
    (work_dir / 'last_checkpoint').write_text(str(truncated))

    resumed = subprocess.run(
        [*train, str(config), '--work-dir', str(work_dir), '--resume'],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return dict(
        work_dir=work_dir,
        config=config,
        killed_losses=killed_losses,
        truncated=truncated,
        stderr=resumed.stderr,
        checkpoint=checkpoint,
    )


@pytest.mark.slow
def test_killed_run_resumes_from_the_newest_complete_checkpoint(full_run, killed_and_resumed):
    _, _, full_dir = full_run
    work_dir = killed_and_resumed['work_dir']
    killed_losses = killed_and_resumed['killed_losses']
    assert sorted(killed_losses) == list(range(1, KILL_AT + 1))
    # Same seed, same config: up to the kill it is the uninterrupted run.
    full_losses = _train_losses(read_scalars(full_dir))
    for it in range(1, KILL_AT + 1):
        assert killed_losses[it]['loss'] == full_losses[it]['loss'], it

    truncated = killed_and_resumed['truncated']
    assert f'skipping incomplete checkpoint {truncated}' in killed_and_resumed['stderr']
    log = read_logs(work_dir)
    assert f'Load checkpoint from {work_dir / f"iter_{CKPT_INTERVAL}.pth"}' in log
    assert f'resumed epoch: 0, iter: {CKPT_INTERVAL}' in log
    assert f'resuming at iteration {CKPT_INTERVAL}' in log
    assert 'random stream after the resume' not in log  # same processes and workers

    # The resumed process trained exactly the iterations after the checkpoint ...
    runs = sorted(glob.glob(str(work_dir / '*' / 'vis_data' / 'scalars.json')))
    assert len(runs) == 2
    last_run = [json.loads(line) for line in Path(runs[-1]).read_text().splitlines() if line]
    assert sorted(_train_losses(last_run)) == list(range(CKPT_INTERVAL + 1, MAX_ITERS + 1))
    # ... and ends with the same iteration count as the uninterrupted run.
    final = torch.load(work_dir / f'iter_{MAX_ITERS}.pth', weights_only=True)
    assert final['meta']['iter'] == MAX_ITERS
    assert not glob.glob(str(work_dir / f'iter_{MAX_ITERS + 1}*.pth'))


@pytest.mark.slow
def test_killed_and_resumed_run_ends_with_the_uninterrupted_weights(full_run, killed_and_resumed):
    """Bitwise: the checkpoint holds the random state of the main process and of the loader's
    worker (augmentations), so the resumed run draws what the uninterrupted one drew."""
    _, _, full_dir = full_run
    work_dir = killed_and_resumed['work_dir']
    state = torch.load(killed_and_resumed['checkpoint'], weights_only=True)['random_state']
    assert (state['num_workers'], state['world_size']) == (1, 1)
    assert state['workers']['states'][0] is not None  # the worker's augmentation draws
    expected = torch.load(full_dir / f'iter_{MAX_ITERS}.pth', weights_only=True)
    resumed = torch.load(work_dir / f'iter_{MAX_ITERS}.pth', weights_only=True)
    assert set(resumed['state_dict']) == set(expected['state_dict'])
    differ = [
        key
        for key, value in expected['state_dict'].items()
        if not torch.equal(resumed['state_dict'][key], value)
    ]
    worst = (
        max(
            (resumed['state_dict'][k] - expected['state_dict'][k]).abs().max().item()
            for k in differ
        )
        if differ
        else 0.0
    )
    assert not differ, f'{len(differ)} tensors differ (max {worst:.3g}), e.g. {differ[:3]}'
    # The optimizer's moments too, and the losses logged after the resume.
    for group_full, group_resumed in zip(
        expected['optimizer']['state'].values(), resumed['optimizer']['state'].values()
    ):
        for key, value in group_full.items():
            assert torch.equal(group_resumed[key], value), key
    runs = sorted(glob.glob(str(work_dir / '*' / 'vis_data' / 'scalars.json')))
    last_run = [json.loads(line) for line in Path(runs[-1]).read_text().splitlines() if line]
    full_losses = _train_losses(read_scalars(full_dir))
    for it, record in _train_losses(last_run).items():
        for term in LOSS_TERMS:
            assert record[term] == full_losses[it][term], (it, term)


def test_resume_with_another_worker_count_warns(image_root, tmp_path, cache_home):
    """A checkpoint of a one-worker run, resumed without workers: the data order is the same,
    the random stream is not, and the log says so."""
    root, _ = image_root
    work_dir = tmp_path / 'work'
    one_worker = write_config(
        tmp_path / 'one.py', root, workers=1, max_iters=2, val_interval=10, ckpt_interval=2
    )
    run_in_process(one_worker, work_dir)
    no_workers = write_config(
        tmp_path / 'none.py', root, workers=0, max_iters=3, val_interval=10, ckpt_interval=2
    )
    cfg = prepare_config(
        str(no_workers),
        work_dir=str(work_dir),
        resume='auto',
        cfg_options={'experiment_name': f'test_{uuid.uuid4().hex[:8]}'},
    )
    runner = build_runner(cfg)
    runner.train()
    assert runner.iter == 3
    assert (
        'the checkpoint was written by 1 process(es) with 1 data-loader worker(s) each; this '
        'run has 1 process(es) with 0: the random stream after the resume'
    ) in read_logs(work_dir)


@pytest.mark.parametrize('workers', [0, 1])
def test_resumed_sampler_continues_the_uninterrupted_data_order(workers):
    """After ``set_start(n * batch)`` a new loader iterator yields the batches the
    uninterrupted one yielded from batch n on, without loading the n skipped ones."""
    from anyup_plugin.training import ResumableInfiniteSampler

    loaded: list[int] = []

    class Indices(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            loaded.append(i)  # only seen in this process without workers
            return i

    def loader():
        return torch.utils.data.DataLoader(
            Indices(),
            batch_size=4,
            sampler=ResumableInfiniteSampler(Indices(), shuffle=True, seed=3),
            num_workers=workers,
        )

    full = iter(loader())
    expected = [next(full).tolist() for _ in range(9)]  # 36 samples: more than 3 passes
    resumed_loader = loader()
    loaded.clear()
    resumed_loader.sampler.set_start(5 * 4)
    resumed = iter(resumed_loader)
    assert [next(resumed).tolist() for _ in range(4)] == expected[5:]
    if workers == 0:
        assert len(loaded) == 16  # only the 4 batches returned were loaded


@pytest.mark.slow
def test_two_gloo_processes_train_and_checkpoint(tmp_path, image_root):
    root, _ = image_root
    config = write_config(tmp_path / 'tiny.py', root, max_iters=4, val_interval=4, ckpt_interval=4)
    work_dir = tmp_path / 'work'
    env = subprocess_env(tmp_path, PORT=str(free_port()), PYTHON=sys.executable)
    result = subprocess.run(
        ['bash', str(DIST_TOOL), str(config), '2', '--work-dir', str(work_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    ckpt = work_dir / 'iter_4.pth'
    assert is_complete_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)
    assert state['meta']['iter'] == 4
    assert all(k.startswith('student.') for k in state['state_dict'])
    log = read_logs(work_dir)
    assert 'initialised the gloo process group' in result.stderr + result.stdout + log
    assert 'Distributed training: True' in log
    assert (work_dir / 'anyup_student_latest.pth').is_file()


def test_folder_without_usable_images_fails_at_start(tmp_path, cache_home):
    root = tmp_path / 'small_images'
    write_image_folder(str(root), num_images=0, min_size=64, seed=1, num_small=3)
    config = write_config(tmp_path / 'tiny.py', root)
    with pytest.raises(ValueError, match=rf"no usable image in '{root}'.*min_size=64 px") as err:
        run_in_process(config, tmp_path / 'work')
    assert '3 smaller' in str(err.value)
    assert not glob.glob(str(tmp_path / 'work' / '*.pth'))


def test_teacher_patch_not_dividing_the_crop_fails_at_start(tmp_path, image_root, cache_home):
    root, _ = image_root
    config = write_config(tmp_path / 'tiny.py', root)
    cfg = prepare_config(
        str(config),
        work_dir=str(tmp_path / 'work'),
        cfg_options={'model.teachers.tiny_vit.patch_size': 3},
    )
    with pytest.raises(ValueError, match="teacher 'tiny_vit' has patch size 3.*crop size 32"):
        build_runner(cfg)
