"""Bad input ends in a message that names it and exit 2, before anything is written: unknown or out-of-range keys,
experiment names outside --output, an unwritable output, a teacher checkpoint that does not fit or holds NaN weights;
and any combination of the quantization keys either trains a step or fails naming a key (property-based).
Each scenario states its guarantee in the test name. The teachers are the shared tiny run's checkpoint."""
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from flags import cli_flags
from qvit_nb.checkpoints import load_checkpoint, save_checkpoint
from qvit_nb.cli import main as qvit
from qvit_nb.train import train


@pytest.mark.parametrize('argv, message', [
    (['--aq-bitwidth', '2'], "did you mean '--aq-bitw'?"),
    (['--epochs', 'ten'], "config key 'epochs' expects an int"),
    (['--wq-bitw', '3'], 'invalid wq_bitw 3'),
    (['--aq-bitw', '2', '--aq-pos', '9'], 'do not fit in 2 bits'),
    (['--qmodules', 'blocks.*.attn.qvk', '--aq-enable'], "matched no module; closest: blocks.0.attn.qkv"),
    (['--dataset', 'cifar10', '--data-dir', '/nonexistent'], 'cifar-10-batches-py'),
    (['--model', 'vit_6_4_23'], "did you mean 'vit_6_4_32'"),
    (['--aq-mode', 'pact'], "unknown quantization mode 'pact'"),
])
def test_bad_input_fails_with_a_message_naming_it(tmp_path, capsys, argv, message, tiny_config):
    code = qvit(['train', *cli_flags(tiny_config), '--output', str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert 'Traceback' not in err


@pytest.mark.parametrize('argv, message', [(['--seed', '1e30'], "config key 'seed' must be in [0, 2**32)"),
                                           (['--img-size', '100000'], "config key 'img_size' must be at most 2048"),
                                           (['--experiment', 'n' * 5000], 'bytes long (at most 200)')])
def test_out_of_range_input_is_refused_before_the_run_directory_exists(tmp_path, capsys, argv, message, tiny_config):
    assert qvit(['train', *cli_flags(tiny_config), '--output', str(tmp_path / 'runs'), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and 'Traceback' not in err and not (tmp_path / 'runs').exists()


def test_unwritable_output_is_refused_before_training(tmp_path, capsys, tiny_config):
    blocker = tmp_path / 'file'
    blocker.write_text('not a directory')
    code = qvit(['train', *cli_flags(tiny_config), '--output', str(blocker / 'runs')])
    assert code == 2 and 'runs' in capsys.readouterr().err


@pytest.mark.parametrize('name', ['../../escaped', '/tmp/qvit-absolute-run', '..', 'x' * 300])
def test_an_experiment_name_must_stay_inside_output(tmp_path, capsys, name, tiny_config):
    out = tmp_path / 'a' / 'b' / 'runs'
    assert qvit(['train', *cli_flags(tiny_config), '--output', str(out), '--experiment', name]) == 2
    assert 'it names one directory inside --output' in capsys.readouterr().err
    assert not (tmp_path / 'escaped').exists() and not Path('/tmp/qvit-absolute-run').exists() and not out.exists()


def test_teacher_checkpoint_of_another_architecture_or_class_count_is_refused(tmp_path, capsys, tiny_config, tiny_run):
    ck = str(tiny_run / 'model_best.pth.tar')
    for extra, msg in [(['--teacher', 'vit_4_4_32'], "does not match teacher_checkpoint"),
                       (['--teacher', 'vit_2_4_32', '--num-classes', '12'], "num_classes=12")]:
        code = qvit(['train', *cli_flags(tiny_config), '--output', str(tmp_path), '--use-kd',
                     '--teacher-checkpoint', ck, *extra])
        err = capsys.readouterr().err
        assert code == 2 and msg in err, err


def test_a_teacher_with_nan_weights_is_refused_naming_the_checkpoint(tmp_path, capsys, tiny_config, tiny_run):
    ck = load_checkpoint(tiny_run / 'model_best.pth.tar')
    k = next(k for k, v in ck['state_dict'].items() if v.is_floating_point() and v.numel() > 1)
    ck['state_dict'][k][0] = float('nan')
    save_checkpoint(ck, tmp_path / 'nan_teacher.pth.tar')
    code = qvit(['train', *cli_flags(tiny_config), '--output', str(tmp_path), '--experiment', 'student', '--use-kd',
                 '--teacher', 'vit_2_4_32', '--teacher-checkpoint', str(tmp_path / 'nan_teacher.pth.tar')])
    err = capsys.readouterr().err
    assert code == 2 and 'Traceback' not in err, err
    assert f"teacher_checkpoint {tmp_path / 'nan_teacher.pth.tar'} has non-finite (NaN/inf) weights in {k}" in err
    m = json.loads((tmp_path / 'student' / 'metrics.json').read_text())
    assert m['status'] == 'failed' and 'non-finite' in m['error']
    assert not (tmp_path / 'student' / 'last.pth.tar').exists()


KEYS = st.fixed_dictionaries({}, optional={
    'aq_enable': st.booleans(), 'aq_bitw': st.sampled_from([1, 2, 3, 4, 8]), 'aq_asym': st.booleans(),
    'aq_pos': st.one_of(st.none(), st.integers(-1, 4)), 'wq_enable': st.booleans(),
    'wq_bitw': st.sampled_from([1, 2, 4, 5]), 'wq_per_channel': st.booleans(), 'wq_asym': st.booleans(),
    'attn_q': st.booleans(), 'act_layer': st.sampled_from(['gelu', 'relu', 'tanh']),
    'norm_layer': st.sampled_from(['layernorm', 'batchnorm']), 'clip_grad': st.one_of(st.none(), st.floats(-1, 2)),
    'clip_mode': st.sampled_from(['norm', 'value', 'agc', 'l3']), 'smoothing': st.floats(-0.5, 1.5),
    'qmodules': st.sampled_from([['linear'], ['attn'], ['all'], ['blocks.0.mlp.fc1;wq:bit:4'], ['blocks.9.mlp.fc1'],
                                 ['linear;aq:bits:x']]),
    'kd_embed': st.sampled_from(['none', 'last', 'all', 'first']), 'use_kd': st.booleans(),
    'mixup': st.sampled_from([0.0, 0.8, -1.0])})


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(KEYS)
# `over` last: @given fills it
def test_any_config_trains_a_step_or_fails_naming_the_key(tmp_path_factory, tiny_config, over):
    out = tmp_path_factory.mktemp('prop')
    if over.get('use_kd'): over['teacher'] = 'vit_2_4_32'
    cfg = {**tiny_config, 'max_images': 32, 'batch_size': 16, 'epochs': 1, 'warmup_epochs': 0, **over}
    try: m = train(output=str(out), experiment='p', **cfg)
    except ValueError as e:
        named = [k for k in [*over, 'qmodules', 'teacher', 'bit', 'levels', 'mixup'] if k in str(e)]
        assert named, f"{e!r} names none of {sorted(over)}"
        return
    assert m['status'] == 'finished' and m['epochs'] == 1
