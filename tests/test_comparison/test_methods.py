"""Method names, weights and the neck each method gets."""

from __future__ import annotations

import pytest

from anyup_plugin.comparison import MissingWeightsError, canonical_method, parse_checkpoints
from anyup_plugin.comparison.methods import check_weights, neck_for_method

ANYUP_NECK = dict(
    type='AnyUpNeck', checkpoint='anyup_paper', frozen=True, window_ratio=0.1, output_stride=1
)


def test_names_and_aliases_resolve_to_registry_keys():
    assert canonical_method('AnyUp') == 'anyup'
    assert canonical_method(' bilinear') == 'bilinear'
    assert canonical_method('jbu') == canonical_method('featup_jbu') == 'featup'
    assert canonical_method('naf') == 'naf'


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match='unknown upsampling method') as info:
        canonical_method('anyupp')
    for known in ('anyup', 'bilinear', 'jafar', 'loftup', 'naf', 'featup', 'guided_filter'):
        assert known in str(info.value)


def test_checkpoint_options():
    parsed = parse_checkpoints(['jbu=a.ckpt', 'JAFAR= b.pth'])
    assert parsed == {'featup': 'a.ckpt', 'jafar': 'b.pth'}
    assert parse_checkpoints(None) == {}
    with pytest.raises(ValueError, match='METHOD=PATH'):
        parse_checkpoints(['jafar'])
    with pytest.raises(ValueError, match='twice'):
        parse_checkpoints(['featup=a', 'jbu=b'])
    with pytest.raises(ValueError, match='known methods'):
        parse_checkpoints(['nope=a'])


@pytest.mark.parametrize('method', ['jafar', 'loftup', 'featup', 'naf'])
def test_learned_method_without_weights_is_refused_outside_the_demo(method):
    with pytest.raises(MissingWeightsError, match=f'--checkpoint {method}=PATH') as info:
        check_weights(method, None, demo=False)
    assert 'https://' in str(info.value)
    check_weights(method, None, demo=True)
    check_weights(method, 'weights.pth', demo=False)


def test_methods_without_weights_and_anyup_need_no_checkpoint():
    for method in ('anyup', 'bilinear', 'bicubic', 'guided_filter', 'joint_bilateral'):
        check_weights(method, None, demo=False)


def test_bilinear_is_the_twin_neck_with_the_same_levels():
    neck = neck_for_method({**ANYUP_NECK, 'in_index': [2, 3], 'output_stride': 4}, 'bilinear')
    assert neck == dict(type='BilinearNeck', in_index=[2, 3], output_stride=4)


def test_anyup_keeps_its_neck_with_the_given_or_no_weights():
    assert neck_for_method(ANYUP_NECK, 'anyup') == ANYUP_NECK
    assert neck_for_method(ANYUP_NECK, 'anyup', 'mine.pth')['checkpoint'] == 'mine.pth'
    assert neck_for_method(ANYUP_NECK, 'anyup', random_weights=True)['checkpoint'] is None


def test_other_methods_switch_the_neck_by_name():
    kwargs = {'feature_channels': 192, 'patch_size': 16}
    neck = neck_for_method(ANYUP_NECK, 'jafar', 'j.pth', method_kwargs=kwargs)
    assert neck == dict(type='AnyUpNeck', checkpoint='j.pth', frozen=True, output_stride=1,
                        method='jafar', feature_channels=192, patch_size=16)  # fmt: skip
    # Never AnyUp's published weights for another method.
    assert neck_for_method(ANYUP_NECK, 'naf')['checkpoint'] is None
    assert ANYUP_NECK['checkpoint'] == 'anyup_paper'  # the input is not changed
