"""AnyUp weights by path alone: hyper-parameters from the shapes and from the file beside."""

from __future__ import annotations

import json

import pytest
import torch

from anyup_plugin.core import AnyUp
from anyup_plugin.core.hub import (
    PUBLISHED_CHECKPOINTS,
    hyper_parameters_path,
    infer_hyper_parameters,
    load_checkpoint_state_dict,
    published_cache_path,
    read_hyper_parameters,
    save_pretrained,
)


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, 24, 20, generator=gen), torch.randn(1, 6, 6, 5, generator=gen)


def _randomised(model: AnyUp, seed: int = 1) -> AnyUp:
    """Moves every parameter off its initial value, so a wrong rebuild shows in the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=gen))
    return model.eval()


def test_published_layout_loads_as_a_plain_state_dict(tmp_path):
    # A file laid out like the published checkpoints: the default architecture, no JSON.
    model = _randomised(AnyUp())
    path = tmp_path / 'anyup_paper_copy.pth'
    torch.save(model.state_dict(), path)
    assert not (tmp_path / 'anyup_paper_copy.json').exists()
    loaded = AnyUp.from_pretrained(path)
    image, features = _inputs()
    with torch.no_grad():
        assert torch.equal(loaded(image, features), model(image, features))


def test_narrow_plain_state_dict_loads_from_its_shapes(tmp_path):
    """The tiny trainer config's student (qk_dim=32) without any file beside it."""
    model = _randomised(AnyUp(qk_dim=32, lfu_kernel_size=3))
    path = tmp_path / 'student.pth'
    torch.save(model.state_dict(), path)
    assert infer_hyper_parameters(model.state_dict()) == {'qk_dim': 32, 'lfu_kernel_size': 3}
    loaded = AnyUp.from_pretrained(path)
    assert loaded.qk_dim == 32
    image, features = _inputs()
    with torch.no_grad():
        assert torch.equal(loaded(image, features), model(image, features))


def test_saved_model_rebuilds_from_the_path_alone(tmp_path):
    """What no shape shows (heads, groups, window) comes from the JSON beside the weights."""
    model = _randomised(
        AnyUp(qk_dim=16, num_heads=2, num_groups=4, window_ratio=0.25, lfu_kernel_size=3)
    )
    path = tmp_path / 'student.pth'
    save_pretrained(model, path)
    # The weights stay a plain weights-only state dict with the published key names.
    state = torch.load(path, weights_only=True)
    assert set(state) == set(model.state_dict())
    assert read_hyper_parameters(path) == {
        'qk_dim': 16,
        'num_heads': 2,
        'lfu_kernel_size': 3,
        'window_ratio': 0.25,
        'num_groups': 4,
    }
    loaded = AnyUp.from_pretrained(path)
    assert (loaded.num_heads, loaded.window_ratio) == (2, 0.25)
    image, features = _inputs()
    with torch.no_grad():
        assert torch.equal(loaded(image, features), model(image, features))
    # Caller arguments take precedence (e.g. a neck's window_ratio).
    assert AnyUp.from_pretrained(path, window_ratio=0.1).window_ratio == 0.1


def test_hyper_parameter_file_of_another_format_is_refused(tmp_path):
    path = tmp_path / 'weights.pth'
    torch.save(AnyUp(qk_dim=16).state_dict(), path)
    with open(hyper_parameters_path(path), 'w', encoding='utf-8') as f:
        json.dump({'qk_dim': 16}, f)
    with pytest.raises(ValueError, match='not an AnyUp hyper-parameter file'):
        AnyUp.from_pretrained(path)


def test_missing_file_says_what_to_pass(tmp_path):
    path = tmp_path / 'none.pth'
    with pytest.raises(FileNotFoundError) as info:
        load_checkpoint_state_dict(path)
    assert str(info.value) == (
        f'AnyUp checkpoint {str(path)!r} does not exist or is not a file. Pass the path of a '
        'trained AnyUp (e.g. work_dirs/<run>/anyup_student_latest.pth) or a published name '
        '(anyup_paper, anyup_multi_backbone).'
    )


@pytest.mark.parametrize(
    'device',
    [
        'cpu',
        torch.device('cpu'),
        'meta',
        torch.device('meta'),
        pytest.param(
            'cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA')
        ),
    ],
)
def test_from_pretrained_builds_the_model_on_map_location(tmp_path, device):
    source = _randomised(AnyUp(qk_dim=16))
    path = tmp_path / 'weights.pth'
    save_pretrained(source, path)
    model = AnyUp.from_pretrained(path, map_location=device)
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    assert tensors
    wrong = {n: (t.device, t.dtype) for n, t in tensors.items()
             if t.device != torch.device(device) or t.dtype != torch.float32}  # fmt: skip
    assert not wrong, wrong
    if torch.device(device).type != 'meta':
        for name, value in source.state_dict().items():
            torch.testing.assert_close(model.state_dict()[name].cpu(), value, rtol=0, atol=0)


def test_offline_published_name_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))

    def offline(url, dst, progress=True):
        raise OSError('Network is unreachable')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
    with pytest.raises(FileNotFoundError) as info:
        AnyUp.from_pretrained('anyup_paper')
    message = str(info.value)
    assert PUBLISHED_CHECKPOINTS['anyup_paper'] in message
    assert f'place it at {published_cache_path("anyup_paper")}' in message
    assert published_cache_path('anyup_paper').startswith(str(tmp_path / 'hub'))
