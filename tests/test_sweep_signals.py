"""Signals to a sweep, and its re-runs: SIGTERM stops its workers and writes its registry; a terminal's Ctrl-C says one
line and records `interrupted`, and the re-run resumes that run; a re-run resumes a stale run from its checkpoint and
starts a failed one anew. Each scenario states its guarantee in the test name."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

from flags import ENV
from qvit_nb.checkpoints import load_checkpoint
from qvit_nb.train import train

# subprocess timeouts only catch a hung run: each is >= 10x the run's time on a quiet machine


def test_sigterm_to_a_sweep_stops_its_workers_and_writes_its_registry(tmp_path, tiny_sweep):
    import psutil
    sweep = tiny_sweep([{'name': 'long', 'overrides': {'epochs': 200, 'log_interval': 1}}], name='sig', inline=True)
    p = subprocess.Popen(_sweep_cmd(sweep), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    for line in p.stdout:                                # the run has saved an epoch (relayed every few seconds)
        if line.startswith('[long] epoch') and '| train loss' in line: break
    p.send_signal(signal.SIGTERM)
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 143 and 'Traceback' not in out, out
    reg = json.loads((tmp_path / 'runs' / 'sig' / 'sweep.json').read_text())
    assert reg['long']['status'] == 'interrupted', reg
    m = json.loads((Path(reg['long']['run_dir']) / 'metrics.json').read_text())
    assert m['status'] == 'interrupted' and m['epochs'] < 200, m
    # nothing trains on
    assert not psutil.pid_exists(m['pid']) or psutil.Process(m['pid']).status() == psutil.STATUS_ZOMBIE


def test_sigkill_to_a_sweep_ends_its_worker_kernel_and_resource_tracker_within_seconds(tmp_path, tiny_sweep):
    import psutil
    cmd = _sweep_cmd(tiny_sweep([{'name': 'long', 'overrides': {'epochs': 200}}], name='k9', inline=True))
    sweep_dir = tmp_path / 'runs' / 'k9'
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 900
    while not any(_summary_rows(d) >= 1 for d in sweep_dir.glob('*/')):         # the run has saved an epoch
        assert p.poll() is None and time.time() < deadline
        time.sleep(0.1)
    family = psutil.Process(p.pid).children(recursive=True)
    names = ' '.join(_living(family).values())           # the pool worker, its kernel, the resource tracker
    assert all(w in names for w in ('spawn_main', 'ipykernel_launcher', 'resource_tracker')), names
    p.kill(); p.wait(timeout=60)                          # kill -9, as the OOM killer does
    psutil.wait_procs(family, timeout=10)
    alive = _living(family)
    for q in family:                                      # none is left to train on the machine
        if q.pid in alive: q.kill()
    assert not alive, alive
    # the worker stopped its kernel as the sweep would have: the run says `interrupted` (a re-run resumes it)
    m = json.loads((next(sweep_dir.glob('*/metrics.json'))).read_text())
    assert m['status'] == 'interrupted' and m['epochs'] < 200, m


def _living(procs) -> dict:
    "pid -> command line of each of `procs` still running (a zombie has ended)."
    import psutil
    out = {}
    for q in procs:
        try:
            if q.is_running() and q.status() != psutil.STATUS_ZOMBIE: out[q.pid] = ' '.join(q.cmdline())[:100]
        except psutil.Error: pass
    return out


def _sweep_cmd(sweep: Path) -> list:
    "`qvit sweep` of the sweep file `sweep` into the `runs` folder beside it."
    return [sys.executable, '-m', 'qvit_nb.cli', 'sweep', str(sweep), '--output', str(sweep.parent / 'runs')]


def _summary_rows(run_dir) -> int:
    try: return len((Path(run_dir) / 'summary.csv').read_text().splitlines()) - 1
    except OSError: return 0


def test_ctrl_c_to_a_sweep_says_one_line_records_interrupted_and_a_rerun_resumes_it(tmp_path, tiny_sweep):
    import psutil
    cmd = _sweep_cmd(tiny_sweep([{'name': 'long', 'overrides': {'epochs': 20}}], name='cc', inline=True))
    sweep_dir = tmp_path / 'runs' / 'cc'
    # a terminal's Ctrl-C signals the whole foreground process group: the sweep and its pool workers
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                         start_new_session=True)
    deadline = time.time() + 900
    while not any(_summary_rows(d) >= 2 for d in sweep_dir.glob('*/')):         # the run has saved two epochs
        assert p.poll() is None and time.time() < deadline, p.stdout.read()
        time.sleep(0.1)
    os.killpg(p.pid, signal.SIGINT)
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 130, out
    own = [l for l in out.splitlines() if not l.startswith('[long] ')]            # all but the relayed progress lines
    # no traceback, no zmq noise
    assert len(own) == 1 and 'interrupted by SIGINT' in own[0] and 'sweep.json' in own[0], out
    reg = json.loads((sweep_dir / 'sweep.json').read_text())
    run_dir = Path(reg['long']['run_dir'])
    assert reg['long']['status'] == 'interrupted', reg
    m = json.loads((run_dir / 'metrics.json').read_text())
    assert m['status'] == 'interrupted' and 2 <= m['epochs'] < 20, m
    # nothing trains on
    assert not psutil.pid_exists(m['pid']) or psutil.Process(m['pid']).status() == psutil.STATUS_ZOMBIE
    done = load_checkpoint(run_dir / 'last.pth.tar')['epoch'] + 1
    before = (run_dir / 'summary.csv').read_text().splitlines()
    assert len(before) == done + 1
    # the re-run continues that run from its checkpoint: same folder and run id, the earlier rows kept
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, timeout=1800)
    assert r.returncode == 0, r.stdout
    resumed = f"[long] resuming run {run_dir.name} (interrupted) from its checkpoint at epoch {done + 1}/20"
    assert resumed in r.stdout, r.stdout
    assert [d.name for d in sweep_dir.iterdir() if (d / 'metrics.json').exists()] == [run_dir.name]
    reg = json.loads((sweep_dir / 'sweep.json').read_text())
    rec = reg['long']
    assert rec['status'] == 'finished' and rec['run_dir'] == str(run_dir) and rec['resumed_from_epoch'] == done, reg
    m = json.loads((run_dir / 'metrics.json').read_text())
    assert m['status'] == 'finished' and m['epochs'] == 20 and m['run_id'] == run_dir.name, m
    after = (run_dir / 'summary.csv').read_text().splitlines()
    assert after[:done + 1] == before and [int(l.split(',')[0]) for l in after[1:]] == list(range(20))


def test_sigint_to_a_sweep_that_inherited_sigint_ignored_still_stops_it(tmp_path, tiny_sweep):
    # a background job of a shell script (`qvit sweep ... &`), or a runner that ignores SIGINT, starts the sweep with
    # SIGINT ignored: Python then raises no KeyboardInterrupt, and the sweep trained every epoch and ended with 0
    cmd = _sweep_cmd(tiny_sweep([{'name': 'long', 'overrides': {'epochs': 8}}], name='ig', inline=True))
    sweep_dir = tmp_path / 'runs' / 'ig'
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                         start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.time() + 900
    while not any(_summary_rows(d) >= 1 for d in sweep_dir.glob('*/')):         # the run has saved an epoch
        assert p.poll() is None and time.time() < deadline, p.stdout.read()
        time.sleep(0.1)
    os.kill(p.pid, signal.SIGINT)                          # `kill -INT`: the sweep only (its workers ignore it)
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 130 and 'interrupted by SIGINT' in out, out
    m = json.loads(next(sweep_dir.glob('*/metrics.json')).read_text())
    assert m['status'] == 'interrupted' and m['epochs'] < 8, m


def test_a_sweep_rerun_resumes_a_stale_run_from_its_checkpoint_and_starts_a_failed_one_anew(tmp_path, capsys,
                                                                                             tiny_sweep):
    from dataclasses import replace
    from qvit_nb.config import save_config
    from qvit_nb.sweeps import load_sweep, run_sweep, sweep_plan
    tiny_sweep([{'name': 'killed', 'overrides': {'epochs': 8}}, {'name': 'broke', 'overrides': {'seed': 3}}], name='rs',
               inline=True)
    sweep, sweep_dir = load_sweep(tmp_path / 'sweep.yml'), (tmp_path / 'runs' / 'rs').resolve()
    ids = {'killed': '20260101-000000-aaaa-killed', 'broke': '20260101-000000-bbbb-broke'}
    for e in sweep.experiments:       # each experiment's run as the sweep would start it: its config, in its folder
        save_config(replace(sweep.config(e, sweep_dir), experiment=ids[e.name]), tmp_path / f"{e.name}.yml")
    p = subprocess.Popen([sys.executable, '-m', 'qvit_nb.cli', 'train', '-c', str(tmp_path / 'killed.yml')],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    for line in p.stdout:   # kill -9 (a lost node, the OOM killer) after its second epoch
        if line.startswith('epoch 2/') and '| train loss' in line: break
    p.send_signal(signal.SIGKILL); p.wait(timeout=60)
    killed = sweep_dir / ids['killed']
    assert json.loads((killed / 'metrics.json').read_text())['status'] == 'running'      # stale: its process is gone
    done = load_checkpoint(killed / 'last.pth.tar')['epoch'] + 1
    before = (killed / 'summary.csv').read_text().splitlines()
    train(tmp_path / 'broke.yml')   # a run that failed (here: marked so) after saving a checkpoint
    broke = sweep_dir / ids['broke']
    m = json.loads((broke / 'metrics.json').read_text())
    (broke / 'metrics.json').write_text(json.dumps({**m, 'status': 'failed', 'error': 'RuntimeError: a bug'}))
    plan = sweep_plan(tmp_path / 'sweep.yml', tmp_path / 'runs')
    assert f"(stale in {killed}: resumed from epoch {done + 1})" in plan
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
    # only the new epochs are relayed
    assert [int(l.split()[2].split('/')[0]) for l in relayed] == list(range(done + 1, 9)), out
    assert f"resuming from {killed / 'last.pth.tar'} at epoch {done + 1}" in (killed / 'progress.log').read_text()
    # a failed run is not continued (it failed from its own error): the re-run starts a new one beside it
    rec = res.records['broke']
    assert rec['status'] == 'finished' and rec['run_dir'] != str(broke) and rec['resumed_from_epoch'] is None, rec
    assert json.loads((broke / 'metrics.json').read_text())['status'] == 'failed'
    assert json.loads((sweep_dir / 'sweep.json').read_text())['killed']['resumed_from_epoch'] == done
