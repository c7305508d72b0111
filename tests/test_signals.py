"""Every way a run ends leaves a status: SIGTERM or SIGINT records `interrupted`, keeps a checkpoint and says one line;
a run whose process is gone reads `stale`; a diverged run stops naming the step and the term and keeps its last
good checkpoint. Each scenario states its guarantee in the test name."""
import json, signal, subprocess, sys

import pytest

from flags import ENV, cli_flags
from qvit_nb.checkpoints import load_checkpoint
from qvit_nb.cli import main as qvit

# subprocess timeouts only catch a hung run: each is >= 10x the run's time on a quiet machine


def _stop_after_first_epoch(p, signum):
    "Send `signum` once the run has saved its first epoch; return the lines printed after the signal."
    for line in p.stdout:
        if line.startswith('epoch 1/') and '| train loss' in line: break
    p.send_signal(signum)
    return p.communicate(timeout=300)[0]


@pytest.mark.parametrize('signum, code', [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_or_sigint_records_interrupted_keeps_a_checkpoint_and_says_one_line(tmp_path, signum, code, qvit_train):
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
    assert ck['epoch'] + 1 == int(out.split(' after ')[1].split()[0])   # the line names the epochs the checkpoint holds
    r = qvit_train(tmp_path, 'stop', extra=['--resume'], **over)
    for line in r.stdout:                                # the resume continues the run from its checkpoint
        if line.startswith('run '): assert f"at epoch {ck['epoch'] + 2}" in line, line; break
    r.kill(); r.wait(timeout=60)


def test_a_running_run_whose_process_is_gone_is_reported_stale(tmp_path, qvit_train):
    from qvit_nb.rundata import load_runs
    p = qvit_train(tmp_path, 'killed', epochs=30, max_images=64)
    for line in p.stdout:
        if line.startswith('epoch 1/') and '| train loss' in line: break
    assert load_runs(tmp_path).set_index('run_id').status['killed'] == 'running'     # its process is alive
    p.send_signal(signal.SIGKILL); p.wait(timeout=60)
    assert json.loads((tmp_path / 'killed' / 'metrics.json').read_text())['status'] == 'running'
    assert load_runs(tmp_path).set_index('run_id').status['killed'] == 'stale'
    assert '| stale' in qvit_report_md(tmp_path)


def qvit_report_md(runs_dir):
    return subprocess.run([sys.executable, '-m', 'qvit_nb.cli', 'report', str(runs_dir)], capture_output=True,
                          text=True, env=ENV, timeout=300).stdout


def test_divergence_stops_with_the_step_and_term_and_keeps_the_last_good_checkpoint(tmp_path, capsys, tiny_config):
    # the study's "bn -> nan": batch-norm tokens, SGD; epoch 0 runs at a tiny warmup lr, epoch 1 at an absurd one
    # (96 images: 3 steps an epoch, so the skip policy meets more than 2 non-finite steps)
    bad = dict(tiny_config, max_images=96, norm_layer='batchnorm', opt='sgd', weight_decay=0.0, warmup_epochs=1,
               warmup_lr=1e-6, lr=1e8, epochs=3)
    code = qvit(['train', *cli_flags(bad), '--output', str(tmp_path), '--experiment', 'bn'])
    err = capsys.readouterr().err
    assert code == 1 and 'training diverged at epoch 1, step ' in err and 'non-finite' in err, err
    m = json.loads((tmp_path / 'bn' / 'metrics.json').read_text())
    assert m['status'] == 'failed' and 'non-finite' in m['error'] and m['epochs'] == 1
    assert load_checkpoint(tmp_path / 'bn' / 'last.pth.tar')['epoch'] == 0       # the last good state is kept
    code = qvit(['train', *cli_flags(bad), '--output', str(tmp_path), '--experiment', 'skip', '--nan-policy', 'skip',
                 '--max-skipped-steps', '2'])
    err = capsys.readouterr().err
    assert code == 1 and 'more than 2 skipped steps' in err, err
