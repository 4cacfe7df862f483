"""torch.export, ONNX (run in onnxruntime) and torch.compile(fullgraph=True) match eager."""

from __future__ import annotations

import pytest
import torch

from anyup_plugin import AnyUp
from anyup_plugin.core.export import FixedSizeAnyUp, example_inputs, export_program, save_export

IMAGE = (1, 3, 28, 21)
MAPS = [(1, 5, 2, 3), (1, 3, 4, 3)]
SIZES = [(14, 21), None]


@pytest.fixture(scope='module')
def model() -> AnyUp:
    torch.manual_seed(0)
    return AnyUp(qk_dim=32, num_heads=4).eval()


@pytest.fixture(scope='module')
def eager(model) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return FixedSizeAnyUp(model, SIZES)(*example_inputs(IMAGE, MAPS))


def _assert_close(outputs, expected):
    assert len(outputs) == len(expected)
    for out, ref in zip(outputs, expected):
        out = torch.as_tensor(out)
        assert out.shape == ref.shape
        rel = ((out - ref).norm() / ref.norm()).item()
        assert rel <= 1e-4, f'relative error {rel:.2e}'


@pytest.fixture(scope='module')
def program(model) -> torch.export.ExportedProgram:
    return export_program(model, IMAGE, MAPS, SIZES)


def test_torch_export_matches_eager(program, eager):
    _assert_close(program.module()(*example_inputs(IMAGE, MAPS)), eager)


def test_exported_program_runs_on_other_values(model, program):
    """The window layout depends on shapes only: new values give the eager result."""
    inputs = example_inputs(IMAGE, MAPS, seed=7)
    with torch.no_grad():
        expected = model(inputs[0], list(inputs[1:]), SIZES)
    _assert_close(program.module()(*inputs), expected)


def test_saved_program_loads_and_matches_eager(model, eager, tmp_path):
    path = save_export(model, tmp_path / 'anyup.pt2', IMAGE, MAPS, SIZES)
    _assert_close(torch.export.load(path).module()(*example_inputs(IMAGE, MAPS)), eager)


def test_onnx_runs_in_onnxruntime_and_matches_eager(model, eager, tmp_path):
    ort = pytest.importorskip('onnxruntime', reason='needs the export extra (onnxruntime)')
    pytest.importorskip('onnxscript', reason='needs the export extra (onnxscript)')
    path = save_export(model, tmp_path / 'anyup.onnx', IMAGE, MAPS, SIZES, optimize=False)
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    assert [i.name for i in session.get_inputs()] == ['image', 'features_0', 'features_1']
    feeds = {
        name: x.numpy()
        for name, x in zip(['image', 'features_0', 'features_1'], example_inputs(IMAGE, MAPS))
    }
    _assert_close(session.run(None, feeds), eager)


def test_compile_fullgraph_matches_eager(model, eager):
    torch._dynamo.reset()
    compiled = torch.compile(FixedSizeAnyUp(model, SIZES), fullgraph=True, backend='aot_eager')
    with torch.no_grad():
        outputs = compiled(*example_inputs(IMAGE, MAPS))
    _assert_close(outputs, eager)


def test_save_export_rejects_an_unknown_suffix(model, tmp_path):
    with pytest.raises(ValueError, match=r'must end in one of \.onnx, \.pt2'):
        save_export(model, tmp_path / 'anyup.bin', IMAGE, MAPS)


@pytest.mark.slow
def test_sdpa_attention_kernel_exports_and_matches_eager(model, tmp_path):
    """The fused-attention variant (for accelerators) traces as well: torch.export and ONNX."""
    ort = pytest.importorskip('onnxruntime', reason='needs the export extra (onnxruntime)')
    pytest.importorskip('onnxscript', reason='needs the export extra (onnxscript)')
    fused = AnyUp(qk_dim=32, num_heads=4, attention_kernel='sdpa').eval()
    fused.load_state_dict(model.state_dict())
    inputs = example_inputs(IMAGE, MAPS)
    with torch.no_grad():
        expected = FixedSizeAnyUp(fused, SIZES)(*inputs)
    _assert_close(export_program(fused, IMAGE, MAPS, SIZES).module()(*inputs), expected)
    path = save_export(fused, tmp_path / 'fused.onnx', IMAGE, MAPS, SIZES, optimize=False)
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    names = [i.name for i in session.get_inputs()]
    _assert_close(session.run(None, {n: x.numpy() for n, x in zip(names, inputs)}), expected)
