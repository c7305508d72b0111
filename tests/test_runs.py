"""Sweeps as papermill runs: failures recorded without stopping the others, re-runs skip what finished, chains,
the submitit executor, the report, and the template notebook's parameters."""
import json, subprocess, sys
from dataclasses import fields
from pathlib import Path

import nbformat
import pytest
import yaml

from qvit_nb.config import TrainConfig
from qvit_nb.runs import load_runs, render_report, run_sweep, train_notebook

TINY = dict(dataset='digits', model='vit_2_4_32', epochs=1, warmup_epochs=0, cooldown_epochs=0, batch_size=32,
            max_images=64, aa=None, mixup=0.0, cutmix=0.0, reprob=0.0, workers=0, amp=False, drop_path=0.0,
            attn_drop=0.0, mean=[0.5] * 3, std=[0.5] * 3, lr=1e-3)


def write_sweep(d: Path, **sweep):
    (d / 'base.yml').write_text(yaml.safe_dump(TINY))
    (d / 'sweep.yml').write_text(yaml.safe_dump({'name': 'tiny', 'base': 'base.yml', **sweep}))
    return d / 'sweep.yml'


def test_template_notebook_has_every_config_key():
    nb = nbformat.read(train_notebook(), as_version=4)
    params = [c for c in nb.cells if 'parameters' in c.metadata.get('tags', [])]
    assert len(params) == 1
    ns = {}
    exec(params[0].source, ns)
    assert sorted(k for k in ns if not k.startswith('__')) == sorted(f.name for f in fields(TrainConfig))
    assert TrainConfig.from_dict({f.name: ns[f.name] for f in fields(TrainConfig)}) == TrainConfig()


def test_sweep_failure_chain_rerun_and_report(tmp_path):
    sweep = write_sweep(tmp_path, workers=2, experiments=[
        dict(name='fp', tricks='baseline'),
        dict(name='kd', tricks='act 2b, kd (fp)', teacher_from='fp',
             overrides=dict(aq_enable=True, aq_bitw=2, kd_type='last', kd_alpha=2.0)),
        dict(name='broken', tricks='no data', overrides=dict(dataset='cifar10', data_dir=str(tmp_path / 'missing')))])
    runs = tmp_path / 'runs'
    res = run_sweep(sweep, output=runs)
    assert res.records['fp']['status'] == 'finished' and res.records['kd']['status'] == 'finished'
    assert res.failed == ['broken']
    assert 'cifar-10-batches-py' in res.records['broken']['error']
    broken_nb = nbformat.read(Path(res.records['broken']['run_dir']) / 'train.ipynb', as_version=4)
    assert any(o.get('output_type') == 'error' for c in broken_nb.cells if c.cell_type == 'code' for o in c.get('outputs', []))
    # the chain: kd's teacher is fp's best checkpoint
    kd_args = yaml.safe_load((Path(res.records['kd']['run_dir']) / 'args.yaml').read_text())
    assert kd_args['use_kd'] and kd_args['teacher_checkpoint'] == str(Path(res.records['fp']['run_dir']).resolve() / 'model_best.pth.tar')
    # the report shows all three with their status
    table = load_runs(runs)
    assert sorted(table.status) == ['failed', 'finished', 'finished'] and set(table.sweep) == {'tiny'}
    md = render_report(runs, 'md')
    assert all(n in md for n in ('baseline', 'act 2b, kd (fp)', 'no data', 'failed'))
    # a re-run executes only the failed experiment
    again = run_sweep(sweep, output=runs)
    assert again.records['fp']['reused'] and again.records['kd']['reused']
    assert not again.records['broken']['reused'] and again.failed == ['broken']
    assert again.records['broken']['run_dir'] != res.records['broken']['run_dir']
    registry = json.loads((runs / 'tiny' / 'sweep.json').read_text())
    assert set(registry) == {'fp', 'kd', 'broken'}


def test_submitit_local_executor_runs_an_experiment(tmp_path):
    sweep = write_sweep(tmp_path, executor='slurm', slurm=dict(cluster='local', timeout_min=10),
                        experiments=[dict(name='fp', tricks='submitit')])
    res = run_sweep(sweep, output=tmp_path / 'runs')
    assert res.records['fp']['status'] == 'finished', res.records
    assert (Path(res.records['fp']['run_dir']) / 'train.ipynb').exists()
    assert list((tmp_path / 'runs' / 'tiny' / '.submitit').glob('*_log.out'))


def test_qvit_sweep_and_report_cli(tmp_path):
    sweep = write_sweep(tmp_path, experiments=[dict(name='fp', tricks='cli')])
    r = subprocess.run([sys.executable, '-m', 'qvit_nb.cli', 'sweep', str(sweep), '--output', str(tmp_path / 'runs')],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert '| tiny' in r.stdout or 'tiny' in r.stdout
    r = subprocess.run([sys.executable, '-m', 'qvit_nb.cli', 'report', str(tmp_path / 'runs'), '--format', 'csv'],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.splitlines()[0].startswith('Network,Tricks,Dataset,Accuracy@1 epochs')
