"""The README's Python example runs as written, offline, on local random weights."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / 'README.md'


def _api_example() -> str:
    """The ```python block of the README's "Python API" section."""
    section = README.read_text().split('## Python API', 1)[-1].split('\n## ', 1)[0]
    blocks = re.findall(r'```python\n(.*?)```', section, flags=re.S)
    assert blocks, 'the README\'s "Python API" section has no ```python block'
    return blocks[0]


@pytest.mark.slow
def test_api_example_runs_verbatim(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from anyup_plugin import AnyUp, FrozenTimmEncoder
    from anyup_plugin.core.hub import published_cache_path

    code = _api_example()
    statements = [
        line
        for line in code.splitlines()
        if line.strip() and not line.startswith(('import', 'from'))
    ]
    assert len(statements) <= 5, 'the API example should stay five lines after its imports'
    checkpoint = re.search(r"checkpoint='([^']+)'", code).group(1)

    # Random stand-ins where the example expects real weights: the backbone's file in the
    # working directory, AnyUp's in torch's hub cache (what from_pretrained finds offline).
    encoder = FrozenTimmEncoder('vit_small_patch14_dinov2.lvd142m')
    save_file(encoder.model.state_dict(), str(tmp_path / checkpoint))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    cached = Path(published_cache_path('anyup_paper'))
    cached.parent.mkdir(parents=True)
    torch.save(AnyUp().state_dict(), cached)
    monkeypatch.chdir(tmp_path)

    namespace: dict = {}
    exec(compile(code, str(README), 'exec'), namespace)

    hr, image = namespace['hr'], namespace['image']
    assert hr.shape == (1, 384, *image.shape[-2:])
    assert torch.isfinite(hr).all()


def test_mmseg_example_is_the_shipped_config():
    """The README's first MMSegmentation example is, statement for statement, the config file
    it names (so the two cannot drift apart)."""
    section = README.read_text().split('## Add AnyUp to an MMSegmentation config', 1)[1]
    section = section.split('\n## ', 1)[0]
    path = re.search(r'`(configs/mmseg/model_zoo/[^`]+\.py)`', section).group(1)
    snippet = re.search(r'```python\n(.*?)```', section, flags=re.S).group(1)
    shipped = ast.parse((README.parent / path).read_text())
    shipped.body = [s for s in shipped.body if not isinstance(s, ast.Expr)]  # the docstring
    assert ast.dump(ast.parse(snippet)) == ast.dump(shipped)
