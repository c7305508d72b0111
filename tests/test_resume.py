"""Resume: a run killed anywhere resumes to the uninterrupted run's exact state; a resume continues the same run with
its checkpoint's settings, applies and records what changed, or refuses without writing; a run folder has one owner.
Each scenario states its guarantee in the test name."""
import json, os, random, signal, time
from pathlib import Path

import pandas as pd
import torch
import yaml

from flags import cli_flags
from qvit_nb.checkpoints import load_checkpoint
from qvit_nb.cli import main as qvit
from qvit_nb.config import config_hash, load_config
from qvit_nb.train import TIMING_COLUMNS, train

# subprocess timeouts only catch a hung run: each is >= 10x the run's time on a quiet machine (~60-90 s for the longest)


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


def test_sigkill_anywhere_then_resume_reproduces_the_uninterrupted_run(tmp_path, qvit_train):
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


def test_resume_never_starts_fresh_over_an_existing_run(tmp_path, capsys, tiny_config, tiny_run_copy):
    tiny_run_copy('done')
    assert qvit(['train', *cli_flags(tiny_config), '--output', str(tmp_path), '--experiment', 'done']) == 2
    assert 'already holds a run; pass --resume' in capsys.readouterr().err


def _files(run_dir):
    return {p.name: p.read_bytes() for p in Path(run_dir).iterdir() if p.is_file()}


def test_a_refused_resume_writes_nothing_and_names_the_key(tmp_path, capsys, tiny_config):
    train(**tiny_config, aq_enable=True, aq_bitw=2, wq_enable=True, wq_bitw=2, output=str(tmp_path), experiment='done')
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


def test_resume_without_a_config_continues_with_the_checkpoints_settings(tmp_path, tiny_config):
    train(**tiny_config, aq_enable=True, aq_bitw=2, output=str(tmp_path), experiment='r')
    args = yaml.safe_load((tmp_path / 'r' / 'args.yaml').read_text())
    assert qvit(['train', '--resume', str(tmp_path / 'r' / 'last.pth.tar'), '--epochs', '2']) == 0
    after = yaml.safe_load((tmp_path / 'r' / 'args.yaml').read_text())
    changed = {k for k in args if args[k] != after[k]}
    assert changed == {'resume', 'epochs'}, changed                # not the defaults: the checkpoint's own config
    m = json.loads((tmp_path / 'r' / 'metrics.json').read_text())
    assert m['status'] == 'finished' and m['epochs'] == 2 and [c['key'] for c in m['resume_changes']] == ['epochs']


def test_a_changed_lr_on_resume_is_applied_and_recorded(tmp_path, tiny_config):
    cfg = {**tiny_config, 'lr': 1e-3}                   # the lr the change below is recorded from
    for name in ('same', 'faster'): train(**cfg, output=str(tmp_path), experiment=name)
    assert qvit(['train', '--resume', str(tmp_path / 'same' / 'last.pth.tar'), '--epochs', '3']) == 0
    assert qvit(['train', '--resume', str(tmp_path / 'faster' / 'last.pth.tar'), '--epochs', '3', '--lr', '0.5']) == 0
    same, faster = state(tmp_path / 'same'), state(tmp_path / 'faster')
    assert not all(torch.equal(same[0][k], faster[0][k]) for k in same[0])          # it trained at the new lr
    assert faster[2].lr.iloc[1] > 10 * same[2].lr.iloc[1]
    assert yaml.safe_load((tmp_path / 'faster' / 'args.yaml').read_text())['lr'] == 0.5
    m = json.loads((tmp_path / 'faster' / 'metrics.json').read_text())
    changes = {(c['key'], c['old'], c['new'], c['epoch']) for c in m['resume_changes']}
    assert changes == {('lr', 1e-3, 0.5, 1), ('epochs', 1, 3, 1)}
    # not the same as lr 0.5 throughout
    assert m['config_hash'] != config_hash(load_config(None, {**cfg, 'epochs': 3, 'lr': 0.5}))


def test_two_runs_started_together_under_one_experiment_name_cannot_share_its_folder(tmp_path, qvit_train):
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
    epoch = lambda name: load_checkpoint(tmp_path / 'dup' / name)['epoch']
    assert epoch('last.pth.tar') == epoch('last-prev.pth.tar') + 1
