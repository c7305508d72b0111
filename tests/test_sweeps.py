"""Sweeps, reliably: two sweeps on one runs folder never run an experiment twice; the registry records skipped and
twin experiments and survives being lost; sweep files with a name outside --output, a billion laughs or broken YAML
are refused in one line; a papermill failure keeps the run's own status. Each scenario states its guarantee in the
test name. Signals to a sweep and its re-runs: test_sweep_signals.py."""
import json, subprocess, sys, time

import pytest

from flags import ENV
from qvit_nb.cli import main as qvit


def test_two_sweeps_on_one_runs_dir_never_run_an_experiment_twice(tmp_path, tiny_sweep):
    sweep = tiny_sweep([dict(name='a', overrides=dict(seed=1)), dict(name='b', overrides=dict(seed=2))], name='c',
                       base={'max_images': 32})
    cmd = [sys.executable, '-m', 'qvit_nb.cli', 'sweep', str(sweep), '--output', str(tmp_path / 'runs')]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
             for _ in range(2)]
    outs = [p.communicate(timeout=1800)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    runs = [d for d in (tmp_path / 'runs' / 'c').iterdir() if (d / 'metrics.json').exists()]
    assert len(runs) == 2, [d.name for d in runs]                 # one run per experiment, not four
    reg = json.loads((tmp_path / 'runs' / 'c' / 'sweep.json').read_text())
    assert sorted(reg) == ['a', 'b'] and all(r['status'] == 'finished' for r in reg.values())


def test_the_registry_records_skipped_and_twin_experiments_and_the_data_folder_is_hashed(tmp_path, tiny_sweep):
    from qvit_nb.sweeps import run_sweep
    tiny_sweep([{'name': 'a'}, {'name': 'twin'}], name='reg', inline=True)       # the same overrides: twins
    runs = tmp_path / 'runs'
    first = run_sweep(tmp_path / 'sweep.yml', output=runs, verbose=False)
    assert first.records['a']['status'] == 'finished'
    twin = first.records['twin']
    assert twin['status'] == 'failed' and "same config as experiment 'a'" in twin['error']
    (runs / 'reg' / 'sweep.json').unlink()   # as if the sweep had been killed before writing its registry
    again = run_sweep(tmp_path / 'sweep.yml', output=runs, verbose=False)
    assert again.records['a']['reused']
    assert set(json.loads((runs / 'reg' / 'sweep.json').read_text())) == {'a', 'twin'}
    other = run_sweep(tmp_path / 'sweep.yml', output=runs, verbose=False, only=['a'],
                      overrides={'data_dir': str(tmp_path)})
    assert not other.records['a']['reused'] and other.records['a']['run_dir'] != first.records['a']['run_dir']


def test_a_sweep_name_must_stay_inside_output(tmp_path, capsys, tiny_sweep):
    tiny_sweep([{'name': 'fp'}], name='../../x', inline=True)
    assert qvit(['sweep', str(tmp_path / 'sweep.yml'), '--output', str(tmp_path / 'o' / 'runs')]) == 2
    assert "sweep name '../../x' contains a path separator" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['sweep.yml']


@pytest.mark.parametrize('text, message', [
    ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + ''.join(
        f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip('abcdefgh', 'bcdefghi'))
     + 'grid: {seed: *i}\nexperiments: [{name: a}]\n',
     'refused: its aliases expand to'),
    ('experiments: [{name: a}\n', 'is not valid YAML')])
def test_a_billion_laughs_or_broken_sweep_file_is_refused_in_one_line(tmp_path, capsys, text, message):
    (tmp_path / 'sweep.yml').write_text(text)
    t0 = time.time()
    assert qvit(['sweep', str(tmp_path / 'sweep.yml'), '--dry-run']) == 2
    err = capsys.readouterr().err
    assert f"sweep file {str(tmp_path / 'sweep.yml')!r} {message}" in err, err
    assert len(err.splitlines()) == 1 and len(err) < 600, err
    assert time.time() - t0 < 30                       # refused before anything expands it


def test_execute_experiment_keeps_interrupted_and_leaves_a_refused_resume_as_it_was(tmp_path, monkeypatch):
    import papermill
    from qvit_nb.sweeps import execute_experiment
    run_dir = tmp_path / 'r'
    stopped = {'status': 'interrupted', 'pid': 1,
               'error': 'run r interrupted by SIGTERM after 1 of 3 epochs; resume with: ...'}

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
    assert rec['status'] == 'failed' and 'stopped before training' in rec['error'], rec
    assert 'would change model' in rec['error'], rec
    # the run is left as it was: a resume writes nothing
    assert json.loads((run_dir / 'metrics.json').read_text()) == stopped
