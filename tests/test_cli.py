"""The `qvit` command as users meet it: a fast `--help`, inputs checked before any work, flags that take no value,
the study's flag spellings, progress lines in logs (no terminal), and sweeps that show what they will run and how
their experiments progress."""
import json, subprocess, sys

from flags import ENV, cli_flags
from qvit_nb.cli import main as qvit


def test_help_imports_neither_torch_nor_timm():
    r = subprocess.run([sys.executable, '-X', 'importtime', '-m', 'qvit_nb.cli', '--help'], capture_output=True,
                       text=True, env=ENV, timeout=600)
    assert r.returncode == 0 and r.stdout.startswith('usage: qvit'), r.stderr[-2000:]
    imported = {line.rsplit('|', 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith('import time:')}
    assert 'qvit_nb' in imported, sorted(imported)                       # the measurement saw our own import
    heavy = sorted(m for m in imported if m.split('.')[0] in ('torch', 'timm', 'pandas', 'numpy'))
    assert not heavy, heavy


def test_missing_input_files_are_refused_before_any_data_loads(tmp_path, capsys, monkeypatch, tiny_config):
    import qvit_nb.train
    def no_data(*a, **k): raise AssertionError('data loaded before the inputs were checked')
    monkeypatch.setattr(qvit_nb.train, 'build_loaders', no_data)
    ck = tmp_path / 'teacher' / 'model_best.pth.tar'
    cases = [(['--use-kd', '--teacher', 'vit_2_4_32', '--teacher-checkpoint', str(ck)],
              f"teacher_checkpoint {ck} does not exist"),
             (['--initial-checkpoint', str(tmp_path)],
              f"initial_checkpoint {tmp_path} is a directory, not a checkpoint file"),
             (['--dataset', 'folder', '--data-dir', str(tmp_path / 'images')],
              f"data_dir {tmp_path / 'images'} does not exist"),
             (['--resume', str(ck)], f"resume checkpoint {ck} does not exist"),
             (['--experiment', 'never', '--resume'],
              f"resume: run directory {tmp_path / 'out' / 'never'} does not exist")]
    for argv, message in cases:
        code = qvit(['train', *cli_flags(tiny_config), '--output', str(tmp_path / 'out'), *argv])
        err = capsys.readouterr().err
        assert code == 2 and message in err and 'Traceback' not in err, (argv, err)
    runs = sorted((tmp_path / 'out').iterdir())
    assert len(runs) == 3, runs                       # the three fresh runs record the failure; resuming writes nothing
    assert all(json.loads((r / 'metrics.json').read_text())['status'] == 'failed' for r in runs)


def test_a_value_after_a_bool_flag_is_refused_not_taken_as_data(capsys, tiny_config):
    assert qvit(['train', *cli_flags(tiny_config), '--aq-enable', 'true']) == 2
    err = capsys.readouterr().err
    assert "--aq-enable takes no value" in err and '--aq-enable (true) or --no-aq-enable (false)' in err, err
    assert qvit(['train', '/data/a', '/data/b', *cli_flags(tiny_config)]) == 2
    assert "one DATA positional is allowed, got '/data/a', '/data/b'" in capsys.readouterr().err


def test_the_studys_flag_spellings_are_listed_and_accepted(capsys):
    assert qvit(['train', '-h']) == 0
    out = capsys.readouterr().out
    for flag, same in [('--use-relu', '--act-layer relu'), ('--use-distill-head', '--distill-head'),
                       ('--replace-ln-by-bn', '--norm-layer batchnorm')]:
        assert flag in out and f"same as {same}" in out, flag
    assert '--use-token-kd' in out and '--kd-type {last,all}' in out      # the study's token-KD flags (05_config)
    assert '--two-head-weight TWO_HEAD_WEIGHT, --distill-weight' in out   # a renamed key's old name, beside the new
    from qvit_nb.config import parse_train_args
    cfg = parse_train_args(['--use-relu', '--replace-ln-by-bn', '--use-kd', '--teacher', 'vit_2_4_32', '--use-token-kd',
                            '--use-distill-head'])
    assert (cfg.act_layer, cfg.norm_layer, cfg.kd_embed, cfg.distill_head) == ('relu', 'batchnorm', 'last', True)


def test_without_a_terminal_progress_is_one_line_per_log_interval(tmp_path, tiny_config):
    over = dict(tiny_config, warmup_epochs=1, cooldown_epochs=1, log_interval=1)   # 2 steps/epoch; warmup 1 >= epochs 1
    r = subprocess.run([sys.executable, '-m', 'qvit_nb.cli', 'train', *cli_flags(over), '--output', str(tmp_path),
                        '--experiment', 'p'], capture_output=True, text=True, env=ENV, timeout=1800)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert 'plan: 2 epochs (1 + 1 cooldown_epochs), warmup 1 epochs, 2 steps/epoch of 32' in lines, lines
    warning = 'warning: warmup_epochs 1 >= epochs 1: the learning rate never reaches lr'
    assert any(l.startswith(warning) for l in lines), lines
    steps = [l for l in lines if ' step ' in l]
    assert [l.split(' |')[0] for l in steps] == [f"epoch {e}/2 step {s}/2" for e in (1, 2) for s in (1, 2)]
    assert all(' | loss ' in l and ' img/s | ETA ' in l for l in steps), steps
    assert any(l.startswith('epoch 2/2 | train loss') for l in lines)   # the closing lines count from 1 as well
    log = (tmp_path / 'p' / 'progress.log').read_text().splitlines()        # what a sweep relays
    assert [l for l in log if ' step ' in l] == steps and log[-1].startswith('run p finished'), log


# the sweep these tests run (with log_interval 1): a float teacher, then a student distilled from it
CHAIN = [dict(name='fp', tricks='teacher'),
         dict(name='kd', teacher_from='fp', overrides=dict(aq_enable=True, kd_type='last'))]


def test_sweep_dry_run_shows_chains_and_configs_and_trains_nothing(tmp_path, capsys, tiny_sweep):
    sweep = tiny_sweep(CHAIN, base={'log_interval': 1})
    assert qvit(['sweep', str(sweep), '--dry-run', '--output', str(tmp_path / 'runs'), '--set', 'seed=7']) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"sweep tiny: 2 experiment(s) in chain order, runs under {tmp_path / 'runs' / 'tiny'}"), out
    fp, kd = out.split('\n[fp]')[1].split('\n[kd]')
    assert '    model: vit_2_4_32' in fp and '    seed: 7' in fp and 'use_kd' not in fp
    # kd_type: its old name
    assert kd.startswith(' teacher_from fp\n') and '    aq_enable: True' in kd and '    kd_embed: last' in kd
    assert f"    teacher_checkpoint: {tmp_path / 'runs' / 'tiny' / '<run of fp>' / 'model_best.pth.tar'}" in kd
    assert '    lr:' not in out   # only the keys that differ from the defaults
    assert not list(tmp_path.rglob('metrics.json'))


def test_a_sweep_relays_its_experiments_progress_and_the_report_names_the_dataset(tmp_path, capsys, tiny_sweep):
    from qvit_nb.results import results_table
    from qvit_nb.rundata import load_runs
    from qvit_nb.sweeps import run_sweep
    sweep = tiny_sweep(CHAIN, base={'log_interval': 1})
    res = run_sweep(sweep, output=tmp_path / 'runs', only=['fp'], progress_every=0.2)
    assert res.records['fp']['status'] == 'finished', res.records
    out = capsys.readouterr().out
    assert '[fp] plan: 1 epochs, warmup 0 epochs, 2 steps/epoch of 32' in out, out
    assert '[fp] epoch 1/1 step 2/2 | loss ' in out and '[fp] run ' in out, out
    assert load_runs(tmp_path / 'runs').dataset.tolist() == ['digits']
    assert results_table(tmp_path / 'runs').Dataset.tolist() == ['digits']
