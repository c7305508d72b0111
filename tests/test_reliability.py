"""Reliability and safety: kill and resume, corrupt checkpoints, divergence, bad input (property-based), untrusted
files, concurrent sweeps. Each scenario states its guarantee in the test name."""
import json, os, random, signal, subprocess, sys, time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from flags import cli_flags as cli_args
from qvit_nb.cli import main as qvit
from qvit_nb.config import TrainConfig, load_config
from qvit_nb.train import TIMING_COLUMNS, CheckpointError, load_checkpoint, previous_checkpoint, save_checkpoint, train

TINY = dict(dataset='digits', model='vit_2_4_32', batch_size=32, max_images=96, aa=None, mixup=0.0, cutmix=0.0,
            reprob=0.0, workers=0, amp=False, warmup_epochs=1, cooldown_epochs=0, lr=1e-3, mean=[0.5] * 3, std=[0.5] * 3)
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}
# subprocess timeouts only catch a hung run: each is >= 10x the run's time on a quiet machine (~60-90 s for the longest)


def qvit_train(output, experiment, extra=(), **over):
    cmd = [sys.executable, '-m', 'qvit_nb.cli', 'train', '--output', str(output), '--experiment', experiment,
           *cli_args({**TINY, **over}), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)


def state(run_dir):
    ck = load_checkpoint(Path(run_dir) / 'last.pth.tar')
    rows = pd.read_csv(Path(run_dir) / 'summary.csv').drop(columns=TIMING_COLUMNS)   # wall times differ between runs
    return ck['state_dict'], ck['optimizer'], rows


def assert_same(a, b):
    (sa, oa, ca), (sb, ob, cb) = a, b
    assert sa.keys() == sb.keys()
    for k in sa: assert torch.equal(sa[k], sb[k]), k
    for i, (x, y) in enumerate(zip(oa['state'].values(), ob['state'].values())):
        for k in x: assert torch.equal(torch.as_tensor(x[k]), torch.as_tensor(y[k])), (i, k)
    pd.testing.assert_frame_equal(ca, cb)


def test_sigkill_anywhere_then_resume_reproduces_the_uninterrupted_run(tmp_path):
    over = dict(epochs=3, max_images=384, aq_enable=True, aq_bitw=2, wq_enable=True, wq_bitw=2)
    ref = qvit_train(tmp_path, 'ref', **over)
    assert ref.wait(timeout=1800) == 0, ref.stdout.read()
    seed = int(os.environ.get('QVIT_KILL_SEED', time.time()))
    rng = random.Random(seed)
    for attempt in range(2):                       # a kill at a random moment of training, then one more after resuming
        p = qvit_train(tmp_path, 'killed', extra=['--resume'] if attempt else [], **over)
        for line in p.stdout:                      # training starts after this line; an epoch takes ~1-2 s
            if line.startswith('run ') or 'starting it from the beginning' in line: break
        time.sleep(rng.uniform(0.0, 3.0))
        if p.poll() is None: p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
        print(f"kill seed {seed}, attempt {attempt}: returncode {p.returncode}")
    final = qvit_train(tmp_path, 'killed', extra=['--resume'], **over)
    out = final.communicate(timeout=1800)[0]
    assert final.returncode == 0, out
    assert_same(state(tmp_path / 'killed'), state(tmp_path / 'ref'))
    leftovers = [p.name for p in (tmp_path / 'killed').iterdir() if p.name.startswith('.')]
    assert not leftovers, leftovers                 # no half-written temp files survive


def test_a_failed_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    p = tmp_path / 'last.pth.tar'
    save_checkpoint({'state_dict': {'w': torch.ones(3)}, 'epoch': 0}, p)

    def crash(*a, **k): raise OSError('disk full')
    monkeypatch.setattr(os, 'fsync', crash)
    with pytest.raises(OSError): save_checkpoint({'state_dict': {'w': torch.zeros(3)}, 'epoch': 1}, p)
    assert load_checkpoint(p)['epoch'] == 0
    assert sorted(f.name for f in tmp_path.iterdir()) == ['last.pth.tar']


@pytest.mark.parametrize('damage', ['truncate', 'garbage'])
def test_corrupt_last_checkpoint_is_named_and_the_previous_one_offered(tmp_path, damage, capsys):
    cfg = dict(TINY, epochs=2, output=str(tmp_path), experiment='run')
    train(**cfg)
    last = tmp_path / 'run' / 'last.pth.tar'
    before = {f.name: f.stat().st_mtime_ns for f in (tmp_path / 'run').iterdir()}
    last.write_bytes(last.read_bytes()[:2000] if damage == 'truncate' else os.urandom(5000))
    assert qvit(['train', *cli_args({**TINY, 'epochs': 3}), '--output', str(tmp_path), '--experiment', 'run', '--resume']) == 2
    err = capsys.readouterr().err
    assert str(last) in err and f"the previous good checkpoint is {previous_checkpoint(last)}" in err
    after = {f.name: f.stat().st_mtime_ns for f in (tmp_path / 'run').iterdir() if f.name != 'last.pth.tar'}
    assert all(before[k] == v for k, v in after.items() if k != 'metrics.json')     # nothing overwritten but the status
    assert load_checkpoint(previous_checkpoint(last))['epoch'] == 0


def test_resume_never_starts_fresh_over_an_existing_run(tmp_path, capsys):
    train(**TINY, epochs=1, output=str(tmp_path), experiment='done')
    assert qvit(['train', *cli_args({**TINY, 'epochs': 1}), '--output', str(tmp_path), '--experiment', 'done']) == 2
    assert 'already holds a run; pass --resume' in capsys.readouterr().err


def test_divergence_stops_with_the_step_and_term_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    # the study's "bn -> nan": batch-norm tokens, SGD; epoch 0 runs at a tiny warmup lr, epoch 1 at an absurd one
    bad = dict(TINY, norm_layer='batchnorm', opt='sgd', weight_decay=0.0, warmup_epochs=1, warmup_lr=1e-6, lr=1e8, epochs=3)
    code = qvit(['train', *cli_args(bad), '--output', str(tmp_path), '--experiment', 'bn'])
    err = capsys.readouterr().err
    assert code == 1 and 'training diverged at epoch 1, step ' in err and 'non-finite' in err, err
    m = json.loads((tmp_path / 'bn' / 'metrics.json').read_text())
    assert m['status'] == 'failed' and 'non-finite' in m['error'] and m['epochs'] == 1
    assert load_checkpoint(tmp_path / 'bn' / 'last.pth.tar')['epoch'] == 0       # the last good state is kept
    code = qvit(['train', *cli_args(bad), '--output', str(tmp_path), '--experiment', 'skip', '--nan-policy', 'skip',
                 '--max-skipped-steps', '2'])
    err = capsys.readouterr().err
    assert code == 1 and 'more than 2 skipped steps' in err, err


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
def test_bad_input_fails_with_a_message_naming_it(tmp_path, capsys, argv, message):
    code = qvit(['train', *cli_args({**TINY, 'epochs': 1}), '--output', str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert 'Traceback' not in err


def test_teacher_checkpoint_of_another_architecture_or_class_count_is_refused(tmp_path, capsys):
    train(**TINY, epochs=1, output=str(tmp_path), experiment='t')
    ck = str(tmp_path / 't' / 'model_best.pth.tar')
    for extra, msg in [(['--teacher', 'vit_4_4_32'], "does not match teacher_checkpoint"),
                       (['--teacher', 'vit_2_4_32', '--num-classes', '12'], "num_classes=12")]:
        code = qvit(['train', *cli_args({**TINY, 'epochs': 1}), '--output', str(tmp_path), '--use-kd',
                     '--teacher-checkpoint', ck, *extra])
        err = capsys.readouterr().err
        assert code == 2 and msg in err, err


def test_unwritable_output_is_refused_before_training(tmp_path, capsys):
    blocker = tmp_path / 'file'
    blocker.write_text('not a directory')
    code = qvit(['train', *cli_args({**TINY, 'epochs': 1}), '--output', str(blocker / 'runs')])
    assert code == 2 and 'runs' in capsys.readouterr().err


def test_untrusted_checkpoint_payload_is_refused(tmp_path):
    class Evil:
        def __reduce__(self): return (os.system, (f'touch {tmp_path}/pwned',))
    p = tmp_path / 'evil.pth.tar'
    torch.save({'state_dict': {}, 'x': Evil()}, p)
    with pytest.raises(CheckpointError, match='refused'): load_checkpoint(p)
    assert not (tmp_path / 'pwned').exists()
    (tmp_path / 'evil.yml').write_text('epochs: !!python/object/apply:os.system ["touch pwned2"]\n')
    with pytest.raises(Exception): load_config(tmp_path / 'evil.yml')
    assert not Path('pwned2').exists()


KEYS = st.fixed_dictionaries({}, optional={
    'aq_enable': st.booleans(), 'aq_bitw': st.sampled_from([1, 2, 3, 4, 8]), 'aq_asym': st.booleans(),
    'aq_pos': st.one_of(st.none(), st.integers(-1, 4)), 'wq_enable': st.booleans(), 'wq_bitw': st.sampled_from([1, 2, 4, 5]),
    'wq_per_channel': st.booleans(), 'wq_asym': st.booleans(), 'attn_q': st.booleans(), 'act_layer': st.sampled_from(['gelu', 'relu', 'tanh']),
    'norm_layer': st.sampled_from(['layernorm', 'batchnorm']), 'clip_grad': st.one_of(st.none(), st.floats(-1, 2)),
    'clip_mode': st.sampled_from(['norm', 'value', 'agc', 'l3']), 'smoothing': st.floats(-0.5, 1.5),
    'qmodules': st.sampled_from([['linear'], ['attn'], ['all'], ['blocks.0.mlp.fc1;wq:bit:4'], ['blocks.9.mlp.fc1'], ['linear;aq:bits:x']]),
    'kd_embed': st.sampled_from(['none', 'last', 'all', 'first']), 'use_kd': st.booleans(), 'mixup': st.sampled_from([0.0, 0.8, -1.0])})


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(KEYS)
def test_any_config_trains_a_step_or_fails_naming_the_key(tmp_path_factory, over):
    out = tmp_path_factory.mktemp('prop')
    if over.get('use_kd'): over['teacher'] = 'vit_2_4_32'
    cfg = {**TINY, 'max_images': 32, 'batch_size': 16, 'epochs': 1, 'warmup_epochs': 0, **over}
    try: m = train(output=str(out), experiment='p', **cfg)
    except ValueError as e:
        named = [k for k in over if k in str(e)] + [k for k in ('qmodules', 'teacher', 'bit', 'levels', 'mixup') if k in str(e)]
        assert named, f"{e!r} names none of {sorted(over)}"
        return
    assert m['status'] == 'finished' and m['epochs'] == 1


def test_two_sweeps_on_one_runs_dir_never_run_an_experiment_twice(tmp_path):
    (tmp_path / 'base.yml').write_text(yaml.safe_dump({**TINY, 'epochs': 1, 'max_images': 32}))
    (tmp_path / 'sw.yml').write_text(yaml.safe_dump(dict(name='c', base='base.yml', experiments=[
        dict(name='a', overrides=dict(seed=1)), dict(name='b', overrides=dict(seed=2))])))
    cmd = [sys.executable, '-m', 'qvit_nb.cli', 'sweep', str(tmp_path / 'sw.yml'), '--output', str(tmp_path / 'runs')]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV) for _ in range(2)]
    outs = [p.communicate(timeout=1800)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    runs = [d for d in (tmp_path / 'runs' / 'c').iterdir() if (d / 'metrics.json').exists()]
    assert len(runs) == 2, [d.name for d in runs]                 # one run per experiment, not four
    reg = json.loads((tmp_path / 'runs' / 'c' / 'sweep.json').read_text())
    assert sorted(reg) == ['a', 'b'] and all(r['status'] == 'finished' for r in reg.values())


# --- issue #17, round two: every way a run ends leaves a status -------------------------------------------------------

def _stop_after_first_epoch(p, signum):
    "Send `signum` once the run has saved its first epoch; return the lines printed after the signal."
    for line in p.stdout:
        if line.startswith('epoch 1/') and '| train loss' in line: break
    p.send_signal(signum)
    return p.communicate(timeout=300)[0]


@pytest.mark.parametrize('signum, code', [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_or_sigint_records_interrupted_keeps_a_checkpoint_and_says_one_line(tmp_path, signum, code):
    over = dict(epochs=30, max_images=64)                # long enough that the signal lands during training
    p = qvit_train(tmp_path, 'stop', **over)
    out = _stop_after_first_epoch(p, signum)
    assert p.returncode == code, out
    assert 'Traceback' not in out and len(out.strip().splitlines()) == 1, out
    assert f"interrupted by {signal.Signals(signum).name}" in out and '--resume' in out, out
    m = json.loads((tmp_path / 'stop' / 'metrics.json').read_text())
    assert m['status'] == 'interrupted' and m['error'].startswith('run stop interrupted'), m
    assert m['pid'] == p.pid and m['host']
    ck = load_checkpoint(tmp_path / 'stop' / 'last.pth.tar')
    assert ck['epoch'] + 1 == int(out.split(' after ')[1].split()[0])     # the line names the epochs the checkpoint holds
    r = qvit_train(tmp_path, 'stop', extra=['--resume'], **over)
    for line in r.stdout:                                # the resume continues the run from its checkpoint
        if line.startswith('run '): assert f"at epoch {ck['epoch'] + 2}" in line, line; break
    r.kill(); r.wait(timeout=60)


def test_a_running_run_whose_process_is_gone_is_reported_stale(tmp_path):
    from qvit_nb.results import load_runs
    p = qvit_train(tmp_path, 'killed', epochs=30, max_images=64)
    for line in p.stdout:
        if line.startswith('epoch 1/') and '| train loss' in line: break
    assert load_runs(tmp_path).set_index('run_id').status['killed'] == 'running'     # its process is alive
    p.send_signal(signal.SIGKILL); p.wait(timeout=60)
    assert json.loads((tmp_path / 'killed' / 'metrics.json').read_text())['status'] == 'running'
    assert load_runs(tmp_path).set_index('run_id').status['killed'] == 'stale'
    assert '| stale' in qvit_report_md(tmp_path)


def qvit_report_md(runs_dir):
    return subprocess.run([sys.executable, '-m', 'qvit_nb.cli', 'report', str(runs_dir)], capture_output=True, text=True,
                          env=ENV, timeout=300).stdout


# --- a resume validates before it writes; it continues the same run or refuses -----------------------------------------

def _files(run_dir):
    return {p.name: p.read_bytes() for p in Path(run_dir).iterdir() if p.is_file()}


def test_a_refused_resume_writes_nothing_and_names_the_key(tmp_path, capsys):
    train(**TINY, epochs=1, aq_enable=True, aq_bitw=2, wq_enable=True, wq_bitw=2, output=str(tmp_path), experiment='done')
    before = _files(tmp_path / 'done')
    last = str(tmp_path / 'done' / 'last.pth.tar')
    for argv, named in [(['--model', 'vit_4_4_32'], "model 'vit_2_4_32' -> 'vit_4_4_32'"),
                        (['--aq-bitw', '4', '--wq-bitw', '4'], 'wq_bitw 2 -> 4, aq_bitw 2 -> 4'),
                        (['--epochs', '3', '--experiment', 'fork'], "--experiment 'fork' and --resume")]:
        assert qvit(['train', '--resume', last, *argv]) == 2
        assert named in capsys.readouterr().err
        assert _files(tmp_path / 'done') == before, argv        # args.yaml, metrics.json, checkpoints: untouched
    assert qvit(['train', '--resume', str(tmp_path / 'done' / 'model_best.pth.tar'), '--experiment', 'fork']) == 2
    assert 'not a run\'s last.pth.tar' in capsys.readouterr().err and not (tmp_path / 'fork').exists()
    assert _files(tmp_path / 'done') == before


def test_resume_without_a_config_continues_with_the_checkpoints_settings(tmp_path):
    train(**TINY, epochs=1, aq_enable=True, aq_bitw=2, output=str(tmp_path), experiment='r')
    args = yaml.safe_load((tmp_path / 'r' / 'args.yaml').read_text())
    assert qvit(['train', '--resume', str(tmp_path / 'r' / 'last.pth.tar'), '--epochs', '2']) == 0
    after = yaml.safe_load((tmp_path / 'r' / 'args.yaml').read_text())
    changed = {k for k in args if args[k] != after[k]}
    assert changed == {'resume', 'epochs'}, changed                # not the defaults: the checkpoint's own config
    m = json.loads((tmp_path / 'r' / 'metrics.json').read_text())
    assert m['status'] == 'finished' and m['epochs'] == 2 and [c['key'] for c in m['resume_changes']] == ['epochs']


def test_a_changed_lr_on_resume_is_applied_and_recorded(tmp_path):
    for name in ('same', 'faster'): train(**TINY, epochs=1, output=str(tmp_path), experiment=name)
    assert qvit(['train', '--resume', str(tmp_path / 'same' / 'last.pth.tar'), '--epochs', '3']) == 0
    assert qvit(['train', '--resume', str(tmp_path / 'faster' / 'last.pth.tar'), '--epochs', '3', '--lr', '0.5']) == 0
    same, faster = state(tmp_path / 'same'), state(tmp_path / 'faster')
    assert not all(torch.equal(same[0][k], faster[0][k]) for k in same[0])          # it trained at the new lr
    assert faster[2].lr.iloc[1] > 10 * same[2].lr.iloc[1]
    assert yaml.safe_load((tmp_path / 'faster' / 'args.yaml').read_text())['lr'] == 0.5
    m = json.loads((tmp_path / 'faster' / 'metrics.json').read_text())
    assert {(c['key'], c['old'], c['new'], c['epoch']) for c in m['resume_changes']} == {('lr', 1e-3, 0.5, 1), ('epochs', 1, 3, 1)}
    from qvit_nb.config import config_hash
    assert m['config_hash'] != config_hash(load_config(None, {**TINY, 'epochs': 3, 'lr': 0.5}))   # not the same as lr 0.5 throughout


# --- a run folder has one owner, inside --output ------------------------------------------------------------------------

def test_two_runs_started_together_under_one_experiment_name_cannot_share_its_folder(tmp_path):
    a = qvit_train(tmp_path, 'dup', epochs=2)
    time.sleep(0.3)
    b = qvit_train(tmp_path, 'dup', epochs=2)
    outs = {p: p.communicate(timeout=600)[0] for p in (a, b)}
    assert sorted(p.returncode for p in outs) == [0, 2], outs
    loser = next(o for p, o in outs.items() if p.returncode == 2)
    assert 'is in use by another process' in loser or 'already holds a run' in loser, loser
    assert 'Traceback' not in loser
    m = json.loads((tmp_path / 'dup' / 'metrics.json').read_text())
    winner = next(p for p in outs if p.returncode == 0)
    assert m['status'] == 'finished' and m['pid'] == winner.pid
    assert load_checkpoint(tmp_path / 'dup' / 'last.pth.tar')['epoch'] == load_checkpoint(tmp_path / 'dup' / 'last-prev.pth.tar')['epoch'] + 1


@pytest.mark.parametrize('name', ['../../escaped', '/tmp/qvit-absolute-run', '..', 'x' * 300])
def test_an_experiment_name_must_stay_inside_output(tmp_path, capsys, name):
    out = tmp_path / 'a' / 'b' / 'runs'
    assert qvit(['train', *cli_args({**TINY, 'epochs': 1}), '--output', str(out), '--experiment', name]) == 2
    assert 'it names one directory inside --output' in capsys.readouterr().err
    assert not (tmp_path / 'escaped').exists() and not Path('/tmp/qvit-absolute-run').exists() and not out.exists()


def test_a_sweep_name_must_stay_inside_output(tmp_path, capsys):
    (tmp_path / 'sweep.yml').write_text(yaml.safe_dump({'name': '../../x', 'experiments': [{'name': 'fp', 'overrides': {**TINY, 'epochs': 1}}]}))
    assert qvit(['sweep', str(tmp_path / 'sweep.yml'), '--output', str(tmp_path / 'o' / 'runs')]) == 2
    assert "sweep name '../../x' contains a path separator" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['sweep.yml']


@pytest.mark.parametrize('text, message', [
    ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + ''.join(
        f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip('abcdefgh', 'bcdefghi')) + 'grid: {seed: *i}\nexperiments: [{name: a}]\n',
     'refused: its aliases expand to'),
    ('experiments: [{name: a}\n', 'is not valid YAML')])
def test_a_billion_laughs_or_broken_sweep_file_is_refused_in_one_line(tmp_path, capsys, text, message):
    (tmp_path / 'sweep.yml').write_text(text)
    t0 = time.time()
    assert qvit(['sweep', str(tmp_path / 'sweep.yml'), '--dry-run']) == 2
    err = capsys.readouterr().err
    assert f"sweep file {str(tmp_path / 'sweep.yml')!r} {message}" in err and len(err.splitlines()) == 1 and len(err) < 600, err
    assert time.time() - t0 < 30                       # refused before anything expands it


# --- checkpoints carry a checksum -----------------------------------------------------------------------------------------

def _tensor_regions(path):
    "(start, size) of each stored tensor's bytes inside a torch zip checkpoint (stored uncompressed)."
    import struct, zipfile
    raw = Path(path).read_bytes()
    out = []
    for info in zipfile.ZipFile(path).infolist():
        if '/data/' in info.filename and info.file_size >= 256:
            n, m = struct.unpack('<HH', raw[info.header_offset + 26:info.header_offset + 30])
            out.append((info.header_offset + 30 + n + m, info.file_size))
    return out


def test_flipped_bytes_in_a_checkpoint_are_caught_and_the_previous_one_offered(tmp_path, capsys):
    train(**TINY, epochs=2, output=str(tmp_path), experiment='run')
    last = tmp_path / 'run' / 'last.pth.tar'
    good = last.read_bytes()
    regions = _tensor_regions(last)
    assert regions
    rng = random.Random(17)
    for attempt in range(15):
        raw = bytearray(good)
        for _ in range(20):
            start, size = rng.choice(regions)
            raw[start + rng.randrange(size)] ^= 1 << rng.randrange(8)
        last.write_bytes(bytes(raw))
        with pytest.raises(CheckpointError, match='do not match the checksum') as e:
            load_checkpoint(last)
        assert f"--resume {previous_checkpoint(last)}" in str(e.value), attempt
    assert qvit(['train', '--resume', str(last), '--epochs', '3']) == 2
    err = capsys.readouterr().err
    assert 'is damaged' in err and 'Traceback' not in err and f"--resume {previous_checkpoint(last)}" in err


def test_an_empty_checkpoint_is_named_with_the_fallback_not_a_traceback(tmp_path, capsys):
    train(**TINY, epochs=2, output=str(tmp_path), experiment='run')
    last = tmp_path / 'run' / 'last.pth.tar'
    last.write_bytes(b'')
    assert qvit(['train', '--resume', str(last), '--epochs', '3']) == 2
    err = capsys.readouterr().err
    assert 'is empty (0 bytes)' in err and f"--resume {previous_checkpoint(last)}" in err and 'Traceback' not in err


# --- bad input ends in a message and exit 2, not a traceback --------------------------------------------------------------

@pytest.mark.parametrize('argv, message', [(['--seed', '1e30'], "config key 'seed' must be in [0, 2**32)"),
                                           (['--img-size', '100000'], "config key 'img_size' must be at most 2048"),
                                           (['--experiment', 'n' * 5000], 'bytes long (at most 200)')])
def test_out_of_range_input_is_refused_before_the_run_directory_exists(tmp_path, capsys, argv, message):
    assert qvit(['train', *cli_args({**TINY, 'epochs': 1}), '--output', str(tmp_path / 'runs'), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and 'Traceback' not in err and not (tmp_path / 'runs').exists()


def test_a_teacher_with_nan_weights_is_refused_naming_the_checkpoint(tmp_path, capsys):
    train(**TINY, epochs=1, output=str(tmp_path), experiment='teacher')
    ck = load_checkpoint(tmp_path / 'teacher' / 'model_best.pth.tar')
    k = next(k for k, v in ck['state_dict'].items() if v.is_floating_point() and v.numel() > 1)
    ck['state_dict'][k][0] = float('nan')
    save_checkpoint(ck, tmp_path / 'nan_teacher.pth.tar')
    code = qvit(['train', *cli_args({**TINY, 'epochs': 1}), '--output', str(tmp_path), '--experiment', 'student', '--use-kd',
                 '--teacher', 'vit_2_4_32', '--teacher-checkpoint', str(tmp_path / 'nan_teacher.pth.tar')])
    err = capsys.readouterr().err
    assert code == 2 and 'Traceback' not in err, err
    assert f"teacher_checkpoint {tmp_path / 'nan_teacher.pth.tar'} has non-finite (NaN/inf) weights in {k}" in err
    m = json.loads((tmp_path / 'student' / 'metrics.json').read_text())
    assert m['status'] == 'failed' and 'non-finite' in m['error'] and not (tmp_path / 'student' / 'last.pth.tar').exists()


# --- the sweep registry records every experiment; the hash covers the data ------------------------------------------------

def test_the_registry_records_skipped_and_twin_experiments_and_the_data_folder_is_hashed(tmp_path):
    from qvit_nb.sweeps import run_sweep
    (tmp_path / 'sweep.yml').write_text(yaml.safe_dump({'name': 'reg', 'experiments': [
        {'name': 'a', 'overrides': {**TINY, 'epochs': 1, 'max_images': 64}},
        {'name': 'twin', 'overrides': {**TINY, 'epochs': 1, 'max_images': 64}}]}))
    runs = tmp_path / 'runs'
    first = run_sweep(tmp_path / 'sweep.yml', output=runs, verbose=False)
    assert first.records['a']['status'] == 'finished'
    assert first.records['twin']['status'] == 'failed' and "same config as experiment 'a'" in first.records['twin']['error']
    (runs / 'reg' / 'sweep.json').unlink()                  # as if the sweep had been killed before writing its registry
    again = run_sweep(tmp_path / 'sweep.yml', output=runs, verbose=False)
    assert again.records['a']['reused']
    assert set(json.loads((runs / 'reg' / 'sweep.json').read_text())) == {'a', 'twin'}
    other = run_sweep(tmp_path / 'sweep.yml', output=runs, verbose=False, only=['a'], overrides={'data_dir': str(tmp_path)})
    assert not other.records['a']['reused'] and other.records['a']['run_dir'] != first.records['a']['run_dir']


def test_damaged_metrics_files_are_reported_not_dropped_or_fatal(tmp_path, capsys):
    train(**TINY, epochs=1, output=str(tmp_path), experiment='good')
    for name, text in [('torn', '{"status": "fini'), ('list', '[1, 2]'), ('typed', '{"status": "finished", "best_top1": "abc"}')]:
        (tmp_path / name).mkdir(); (tmp_path / name / 'metrics.json').write_text(text)
    capsys.readouterr()
    assert qvit(['report', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(f"| {n} " in out for n in ('good', 'torn', 'list', 'typed')) and out.count('| damaged ') == 2, out


def test_damaged_summary_or_metrics_keep_their_run_in_the_report_and_the_dashboard(tmp_path, capsys):
    import shutil
    train(**TINY, epochs=2, output=str(tmp_path), experiment='good')
    text = (tmp_path / 'good' / 'summary.csv').read_text()
    for name, summary in [('torn', text[:text.index('\n') + 12]), ('garbage', bytes(range(256)) * 8), ('columns', 'x,y\n1,2\n'),
                          ('empty', ''), ('text', text.replace('\n1,', '\nnan?,', 1)), ('badmetrics', text)]:
        shutil.copytree(tmp_path / 'good', tmp_path / name)
        m = json.loads((tmp_path / name / 'metrics.json').read_text())
        (tmp_path / name / 'metrics.json').write_text(json.dumps({**m, 'run_id': name}))
        p = tmp_path / name / 'summary.csv'
        p.write_bytes(summary) if isinstance(summary, bytes) else p.write_text(summary)
    (tmp_path / 'badmetrics' / 'metrics.json').write_bytes(bytes(range(256)))
    capsys.readouterr()
    assert qvit(['report', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    names = ('good', 'torn', 'garbage', 'columns', 'empty', 'text', 'badmetrics')
    assert all(f"| {n} " in out for n in names) and out.count('| damaged ') == 1, out
    assert qvit(['dashboard', str(tmp_path), '--html', str(tmp_path / 'd.html')]) == 0
    page = (tmp_path / 'd.html').read_text()
    assert page.count('</tr>') == 1 + len(names) and page.count('(no curve: damaged summary.csv)') == 5, page.count('</tr>')
    assert 'top1 per epoch (5 run(s) without a curve: damaged summary.csv)' in page


def test_sigterm_to_a_sweep_stops_its_workers_and_writes_its_registry(tmp_path):
    import psutil
    (tmp_path / 'sweep.yml').write_text(yaml.safe_dump({'name': 'sig', 'experiments': [
        {'name': 'long', 'overrides': {**TINY, 'epochs': 200, 'max_images': 64, 'log_interval': 1}}]}))
    p = subprocess.Popen([sys.executable, '-m', 'qvit_nb.cli', 'sweep', str(tmp_path / 'sweep.yml'), '--output', str(tmp_path / 'runs')],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    for line in p.stdout:                                # the run has saved an epoch (relayed every few seconds)
        if line.startswith('[long] epoch') and '| train loss' in line: break
    p.send_signal(signal.SIGTERM)
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 143 and 'Traceback' not in out, out
    reg = json.loads((tmp_path / 'runs' / 'sig' / 'sweep.json').read_text())
    assert reg['long']['status'] == 'interrupted', reg
    m = json.loads((Path(reg['long']['run_dir']) / 'metrics.json').read_text())
    assert m['status'] == 'interrupted' and m['epochs'] < 200, m
    assert not psutil.pid_exists(m['pid']) or psutil.Process(m['pid']).status() == psutil.STATUS_ZOMBIE   # nothing trains on


# --- a sweep's Ctrl-C, and its re-run resuming what was interrupted ------------------------------------------------------

def _sweep(tmp_path, name, experiments):
    (tmp_path / 'sweep.yml').write_text(yaml.safe_dump({'name': name, 'experiments': experiments}))
    return [sys.executable, '-m', 'qvit_nb.cli', 'sweep', str(tmp_path / 'sweep.yml'), '--output', str(tmp_path / 'runs')]


def _summary_rows(run_dir) -> int:
    try: return len((Path(run_dir) / 'summary.csv').read_text().splitlines()) - 1
    except OSError: return 0


def test_ctrl_c_to_a_sweep_says_one_line_records_interrupted_and_a_rerun_resumes_it(tmp_path):
    import psutil
    cmd = _sweep(tmp_path, 'cc', [{'name': 'long', 'overrides': {**TINY, 'epochs': 20, 'max_images': 64}}])
    sweep_dir = tmp_path / 'runs' / 'cc'
    # a terminal's Ctrl-C signals the whole foreground process group: the sweep and its pool workers
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, start_new_session=True)
    deadline = time.time() + 900
    while not any(_summary_rows(d) >= 2 for d in sweep_dir.glob('*/')):         # the run has saved two epochs
        assert p.poll() is None and time.time() < deadline, p.stdout.read()
        time.sleep(0.1)
    os.killpg(p.pid, signal.SIGINT)
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 130, out
    own = [l for l in out.splitlines() if not l.startswith('[long] ')]            # all but the relayed progress lines
    assert len(own) == 1 and 'interrupted by SIGINT' in own[0] and 'sweep.json' in own[0], out   # no traceback, no zmq noise
    reg = json.loads((sweep_dir / 'sweep.json').read_text())
    run_dir = Path(reg['long']['run_dir'])
    assert reg['long']['status'] == 'interrupted', reg
    m = json.loads((run_dir / 'metrics.json').read_text())
    assert m['status'] == 'interrupted' and 2 <= m['epochs'] < 20, m
    assert not psutil.pid_exists(m['pid']) or psutil.Process(m['pid']).status() == psutil.STATUS_ZOMBIE   # nothing trains on
    done = load_checkpoint(run_dir / 'last.pth.tar')['epoch'] + 1
    before = (run_dir / 'summary.csv').read_text().splitlines()
    assert len(before) == done + 1
    # the re-run continues that run from its checkpoint: same folder and run id, the earlier rows kept
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, timeout=1800)
    assert r.returncode == 0, r.stdout
    assert f"[long] resuming run {run_dir.name} (interrupted) from its checkpoint at epoch {done + 1}/20" in r.stdout, r.stdout
    assert [d.name for d in sweep_dir.iterdir() if (d / 'metrics.json').exists()] == [run_dir.name]
    reg = json.loads((sweep_dir / 'sweep.json').read_text())
    assert reg['long']['status'] == 'finished' and reg['long']['run_dir'] == str(run_dir) and reg['long']['resumed_from_epoch'] == done, reg
    m = json.loads((run_dir / 'metrics.json').read_text())
    assert m['status'] == 'finished' and m['epochs'] == 20 and m['run_id'] == run_dir.name, m
    after = (run_dir / 'summary.csv').read_text().splitlines()
    assert after[:done + 1] == before and [int(l.split(',')[0]) for l in after[1:]] == list(range(20))


def test_a_sweep_rerun_resumes_a_stale_run_from_its_checkpoint_and_starts_a_failed_one_anew(tmp_path, capsys):
    from dataclasses import replace
    from qvit_nb.config import save_config
    from qvit_nb.sweeps import load_sweep, run_sweep, sweep_plan
    _sweep(tmp_path, 'rs', [{'name': 'killed', 'overrides': {**TINY, 'epochs': 8, 'max_images': 64}},
                                  {'name': 'broke', 'overrides': {**TINY, 'epochs': 1, 'max_images': 64, 'seed': 3}}])
    sweep, sweep_dir = load_sweep(tmp_path / 'sweep.yml'), (tmp_path / 'runs' / 'rs').resolve()
    ids = {'killed': '20260101-000000-aaaa-killed', 'broke': '20260101-000000-bbbb-broke'}
    for e in sweep.experiments:       # each experiment's run as the sweep would start it: its config, in its folder
        save_config(replace(sweep.config(e, sweep_dir), experiment=ids[e.name]), tmp_path / f"{e.name}.yml")
    p = subprocess.Popen([sys.executable, '-m', 'qvit_nb.cli', 'train', '-c', str(tmp_path / 'killed.yml')],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    for line in p.stdout:                                  # kill -9 (a lost node, the OOM killer) after its second epoch
        if line.startswith('epoch 2/') and '| train loss' in line: break
    p.send_signal(signal.SIGKILL); p.wait(timeout=60)
    killed = sweep_dir / ids['killed']
    assert json.loads((killed / 'metrics.json').read_text())['status'] == 'running'      # stale: its process is gone
    done = load_checkpoint(killed / 'last.pth.tar')['epoch'] + 1
    before = (killed / 'summary.csv').read_text().splitlines()
    train(tmp_path / 'broke.yml')                          # a run that failed (here: marked so) after saving a checkpoint
    broke = sweep_dir / ids['broke']
    m = json.loads((broke / 'metrics.json').read_text())
    (broke / 'metrics.json').write_text(json.dumps({**m, 'status': 'failed', 'error': 'RuntimeError: a bug'}))
    assert f"(stale in {killed}: resumed from epoch {done + 1})" in sweep_plan(tmp_path / 'sweep.yml', tmp_path / 'runs')
    capsys.readouterr()
    res = run_sweep(tmp_path / 'sweep.yml', output=tmp_path / 'runs', progress_every=0.5)
    out = capsys.readouterr().out
    assert f"[killed] resuming run {ids['killed']} (stale) from its checkpoint at epoch {done + 1}/8" in out, out
    rec = res.records['killed']
    assert rec['status'] == 'finished' and rec['run_dir'] == str(killed) and rec['resumed_from_epoch'] == done, rec
    m = json.loads((killed / 'metrics.json').read_text())
    assert m['status'] == 'finished' and m['epochs'] == 8 and m['run_id'] == ids['killed'], m
    after = (killed / 'summary.csv').read_text().splitlines()
    assert after[:done + 1] == before and [int(l.split(',')[0]) for l in after[1:]] == list(range(8))
    relayed = [l for l in out.splitlines() if l.startswith('[killed] epoch ') and '| train loss' in l]
    assert [int(l.split()[2].split('/')[0]) for l in relayed] == list(range(done + 1, 9)), out   # only the new epochs are relayed
    assert f"resuming from {killed / 'last.pth.tar'} at epoch {done + 1}" in (killed / 'progress.log').read_text()
    # a failed run is not continued (it failed from its own error): the re-run starts a new one beside it
    rec = res.records['broke']
    assert rec['status'] == 'finished' and rec['run_dir'] != str(broke) and rec['resumed_from_epoch'] is None, rec
    assert json.loads((broke / 'metrics.json').read_text())['status'] == 'failed'
    assert json.loads((sweep_dir / 'sweep.json').read_text())['killed']['resumed_from_epoch'] == done


def test_execute_experiment_keeps_interrupted_and_leaves_a_refused_resume_as_it_was(tmp_path, monkeypatch):
    import papermill
    from qvit_nb.sweeps import execute_experiment
    run_dir = tmp_path / 'r'
    stopped = {'status': 'interrupted', 'error': 'run r interrupted by SIGTERM after 1 of 3 epochs; resume with: ...', 'pid': 1}

    def interrupted(*a, **k):          # the kernel recorded 'interrupted', then its cell raised
        (run_dir / 'metrics.json').write_text(json.dumps(stopped))
        raise RuntimeError('RunInterrupted: run r interrupted by SIGTERM')
    monkeypatch.setattr(papermill, 'execute_notebook', interrupted)
    rec = execute_experiment(dict(name='r', params={}, run_dir=str(run_dir)))
    assert rec['status'] == 'interrupted' and rec['error'] == stopped['error'], rec
    assert json.loads((run_dir / 'metrics.json').read_text()) == stopped

    def refused(*a, **k): raise RuntimeError("ValueError: resume from r/last.pth.tar would change model")
    monkeypatch.setattr(papermill, 'execute_notebook', refused)
    rec = execute_experiment(dict(name='r', params={}, run_dir=str(run_dir), resumed_from_epoch=1))
    assert rec['status'] == 'failed' and 'stopped before training' in rec['error'] and 'would change model' in rec['error'], rec
    assert json.loads((run_dir / 'metrics.json').read_text()) == stopped       # the run is left as it was: a resume writes nothing
