"""Sweeps as papermill runs: failures recorded without stopping the others, re-runs skip what finished, chains,
the submitit executor, the report, the template notebook's one parameter and imports, and the report a weight-only
run writes."""
import ast, json, re, subprocess, sys
from pathlib import Path

import nbformat
import pytest
import yaml

from qvit_nb.config import TrainConfig
from qvit_nb.results import render_report
from qvit_nb.rundata import load_runs
from qvit_nb.sweeps import report_config, run_sweep, train_notebook

# these tests' runs: the tiny config without dropout, at lr 1e-3
NO_DROPOUT = dict(drop_path=0.0, attn_drop=0.0, lr=1e-3)


@pytest.fixture
def config(tiny_config):
    return {**tiny_config, **NO_DROPOUT}


@pytest.fixture
def write_sweep(tiny_sweep):
    "`write_sweep(experiments, **sweep keys)`: the tiny sweep of these tests."
    return lambda experiments, **sweep: tiny_sweep(experiments, base=NO_DROPOUT, **sweep)


def test_template_takes_the_config_and_the_thread_count(config):
    """The report opens with two short parameters, the run's config as a dict (the template builds TrainConfig from it)
    and its CPU thread count."""
    nb = nbformat.read(train_notebook(), as_version=4)
    params = [c for c in nb.cells if 'parameters' in c.metadata.get('tags', [])]
    assert len(params) == 1 and len(params[0].source.splitlines()) <= 5
    ns = {}
    exec(params[0].source, ns)
    assert sorted(k for k in ns if not k.startswith('__')) == ['config', 'threads'] and ns['config'] == {}
    assert ns['threads'] is None                     # the run's CPU threads: a parameter, not an environment variable
    assert any('TrainConfig.from_dict(config)' in c.source for c in nb.cells if c.cell_type == 'code')
    # papermill gets only what differs from the defaults, and that rebuilds the full config
    cfg = TrainConfig.from_dict({**config, 'aq_enable': True, 'experiment': 'x'})
    short = report_config(cfg.to_dict())
    assert short['aq_enable'] is True and set(short) <= {*config, 'aq_enable', 'experiment'}
    assert TrainConfig.from_dict(short) == cfg


def test_the_template_imports_nothing_that_imports_runs(tmp_path):
    """`runs` executes the template, so the template's imports (read from its code cells) must not import
    `qvit_nb.sweeps`: no hidden loop template -> dashboard -> sweeps -> template. Checked in a fresh interpreter."""
    nb = nbformat.read(train_notebook(), as_version=4)
    imports = [ast.unparse(n) for c in nb.cells if c.cell_type == 'code' for n in ast.walk(ast.parse(c.source))
               if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert any('qvit_nb.dashboard' in i for i in imports), imports
    code = '; '.join(imports + ["import sys", "print(sorted(m for m in sys.modules if m.startswith('qvit_nb')))"])
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    loaded = ast.literal_eval(r.stdout.strip().splitlines()[-1])
    assert {'qvit_nb.dashboard', 'qvit_nb.train'} <= set(loaded) and 'qvit_nb.sweeps' not in loaded, loaded


def test_weight_only_run_report_finishes_and_keeps_its_figures(tmp_path, monkeypatch, config):
    """A weight-only run through papermill: `finished`, its report says why there is no activation histogram, shows no
    CPU-only warning, keeps its figure in plain nbconvert HTML (plotly.js inlined, nothing fetched), and a report
    cell that fails after training is kept as `report_error` without failing the run."""
    from nbconvert import HTMLExporter
    import qvit_nb.sweeps as runs
    template = nbformat.read(train_notebook(), as_version=4)
    # where a CUDA toolkit but no GPU: the CPU-only line
    template.cells += [nbformat.v4.new_code_cell("import torch.utils.cpp_extension"),
                       nbformat.v4.new_code_cell("raise RuntimeError('a report cell broke after training')")]
    nbformat.write(template, tmp_path / 'train.ipynb')
    monkeypatch.setattr(runs, 'train_notebook', lambda: tmp_path / 'train.ipynb')
    cfg = TrainConfig.from_dict({**config, 'output': str(tmp_path / 'runs'), 'experiment': 'w2', 'wq_enable': True,
                                 'wq_bitw': 2})
    rec = runs.execute_experiment(dict(name='w2', params=cfg.to_dict(), run_dir=str(tmp_path / 'runs' / 'w2'),
                                       threads=1))
    assert rec['status'] == 'finished' and rec['error'] is None, rec
    assert 'a report cell broke after training' in rec['report_error']
    assert json.loads((tmp_path / 'runs' / 'w2' / 'metrics.json').read_text())['status'] == 'finished'
    nb = nbformat.read(tmp_path / 'runs' / 'w2' / 'train.ipynb', as_version=4)
    code = [c for c in nb.cells if c.cell_type == 'code']
    errors = [i for i, c in enumerate(code) for o in c.outputs if o.output_type == 'error']
    assert errors == [len(code) - 1]                                 # only the appended cell failed
    text = json.dumps([c.outputs for c in code])
    assert 'Only the weights are quantized' in text and 'No CUDA runtime' not in text
    stderr = [o.text for c in code for o in c.outputs if o.get('name') == 'stderr']
    assert not stderr, stderr
    injected = [c for c in code if 'injected-parameters' in c.metadata.get('tags', [])]
    assert len(injected) == 1 and len(injected[0].source) < 1000     # a short header, not a page of defaults
    html, _ = HTMLExporter().from_notebook_node(nb)
    assert html.count('Plotly.newPlot(') >= 1 and html.count('* plotly.js v') == 1   # the curves, plotly.js once
    srcs = re.findall(r"<script[^>]+src=[\"']?(https?://[^\"' >]+)", html)
    # only nbconvert's own page scripts, never the figures'
    assert all('require' in u or 'mathjax' in u for u in srcs), srcs


def test_sweep_failure_chain_rerun_and_report(tmp_path, write_sweep):
    sweep = write_sweep(workers=2, experiments=[
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
    assert any(o.get('output_type') == 'error' for c in broken_nb.cells if c.cell_type == 'code'
               for o in c.get('outputs', []))
    # the chain: kd's teacher is fp's best checkpoint
    kd_args = yaml.safe_load((Path(res.records['kd']['run_dir']) / 'args.yaml').read_text())
    fp_best = Path(res.records['fp']['run_dir']).resolve() / 'model_best.pth.tar'
    assert kd_args['use_kd'] and kd_args['teacher_checkpoint'] == str(fp_best)
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


def test_submitit_local_executor_runs_an_experiment(tmp_path, write_sweep):
    sweep = write_sweep(executor='slurm', slurm=dict(cluster='local', timeout_min=10),
                        experiments=[dict(name='fp', tricks='submitit')])
    res = run_sweep(sweep, output=tmp_path / 'runs')
    assert res.records['fp']['status'] == 'finished', res.records
    assert (Path(res.records['fp']['run_dir']) / 'train.ipynb').exists()
    assert list((tmp_path / 'runs' / 'tiny' / '.submitit').glob('*_log.out'))


def test_qvit_sweep_and_report_cli(tmp_path, write_sweep):
    sweep = write_sweep(experiments=[dict(name='fp', tricks='cli')])
    r = subprocess.run([sys.executable, '-m', 'qvit_nb.cli', 'sweep', str(sweep), '--output', str(tmp_path / 'runs')],
                       capture_output=True, text=True, timeout=1800)   # only catches a hang: >= 10x a quiet run
    assert r.returncode == 0, r.stderr[-2000:]
    assert '| tiny' in r.stdout or 'tiny' in r.stdout
    r = subprocess.run([sys.executable, '-m', 'qvit_nb.cli', 'report', str(tmp_path / 'runs'), '--format', 'csv'],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.splitlines()[0].startswith('Network,Tricks,Dataset,Accuracy@1 epochs')


def test_runs_and_dashboard_do_not_import_the_training_loop():
    """The registry and the dashboards read runs through `qvit_nb.checkpoints` and `qvit_nb.builders`, never
    `qvit_nb.train`."""
    code = ("import sys, qvit_nb.results, qvit_nb.sweeps, qvit_nb.rundata, qvit_nb.dashboard; "
            "assert 'qvit_nb.train' not in sys.modules, sorted(m for m in sys.modules if m.startswith('qvit_nb'))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
