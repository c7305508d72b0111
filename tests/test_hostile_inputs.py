"""Hostile or careless input ends in one line and exit 2, quickly and within bounded memory: every reader of user
files (configs with their `base:` chains, `--set` values, sweep files) reads each file once per load, regular files
only, with size, nesting and alias bounds named in the message, which never quotes the file. Output places that
cannot be written, a full disk under the sweep registry, and values that would only fail at run time are refused
the same way; a few misleading messages now say what is true. Each scenario states its guarantee in the test name."""
import errno, json, os, pathlib, socket, subprocess, sys, time
from pathlib import Path

import pytest
import yaml

from flags import ENV, cli_flags
from qvit_nb.cli import main as qvit

READ_ONLY = Path('/sys')    # sysfs takes no new file, even from root (a chmod-ed folder does not stop root)


def one_line(capsys) -> str:
    "The command's stderr, which must be a single line without a traceback."
    err = capsys.readouterr().err
    assert 'Traceback' not in err and len(err.strip().splitlines()) == 1, err[:2000]
    return err


def last_line(capsys) -> str:
    "`qvit train`'s stderr (argparse's usage line, then the error): the error line, no traceback."
    err = capsys.readouterr().err
    assert 'Traceback' not in err and len(err.strip().splitlines()) <= 2, err[:2000]
    return err.strip().splitlines()[-1]


def tiny_train(tmp_path, tiny_config, *extra) -> list:
    return ['train', *cli_flags(tiny_config), '--output', str(tmp_path / 'runs'), *extra]


def sweep_file(tmp_path, text: str) -> str:
    (tmp_path / 'sweep.yml').write_text(text)
    return str(tmp_path / 'sweep.yml')


# --- base: chains ------------------------------------------------------------------------------------------------

@pytest.fixture
def doubling_chain(tmp_path, monkeypatch):
    """`doubling_chain(n, last)`: files c0..c{n-1}.yml, each naming the next one twice in `base:` (2**(n-1) reads of
    the last one without the once-per-load rule), `last` the text of the last one; returns c0's path. Looking up a
    chain file more than 2,000 times fails the test at once (rather than after minutes)."""
    looked_up = []
    real_stat = pathlib.Path.stat
    def counting_stat(self, *a, **k):
        if self.name.startswith('c') and self.suffix == '.yml':
            looked_up.append(self)
            if len(looked_up) > 2000: raise AssertionError(f"{len(looked_up)} lookups of base: files: exponential")
        return real_stat(self, *a, **k)
    monkeypatch.setattr(pathlib.Path, 'stat', counting_stat)
    def write(n: int, last: str) -> Path:
        for i in range(n - 1): (tmp_path / f'c{i}.yml').write_text(f'base: [c{i + 1}.yml, c{i + 1}.yml]\n')
        (tmp_path / f'c{n - 1}.yml').write_text(last)
        return tmp_path / 'c0.yml'
    return write


def test_a_doubling_base_chain_is_read_once_per_file_by_train(tmp_path, capsys, tiny_config, doubling_chain):
    top = doubling_chain(23, 'wq_bitw: 3\n')          # a bad value at the bottom: refused once it is read
    t0 = time.time()
    assert qvit(tiny_train(tmp_path, tiny_config, '-c', str(top))) == 2
    assert 'invalid wq_bitw 3' in last_line(capsys) and time.time() - t0 < 30


def test_a_doubling_base_chain_is_read_once_per_file_by_a_sweep(tmp_path, capsys, doubling_chain):
    doubling_chain(23, 'dataset: digits\nmodel: vit_2_4_32\n')
    sweep = sweep_file(tmp_path, 'name: s\nbase: c0.yml\nexperiments: [{name: a}, {name: b, overrides: {seed: 2}}]\n')
    assert qvit(['sweep', sweep, '--dry-run', '--output', str(tmp_path / 'runs')]) == 0
    assert 'model: vit_2_4_32' in capsys.readouterr().out


def test_export_reads_a_doubling_base_chain_in_args_yaml_once_per_file(tmp_path, capsys, tiny_run_copy,
                                                                       doubling_chain):
    run = tiny_run_copy('r')
    doubling_chain(20, 'seed: 0\n')
    (run / 'args.yaml').write_text(f"base: {tmp_path / 'c0.yml'}\n" + (run / 'args.yaml').read_text())
    assert qvit(['export', str(run), '-o', str(tmp_path / 'm.onnx')]) == 0, capsys.readouterr().err
    assert (tmp_path / 'm.onnx').is_file()


def test_a_base_chain_of_too_many_files_is_refused_naming_the_bound(tmp_path, capsys, tiny_config):
    for i in range(40): (tmp_path / f'f{i}.yml').write_text(f'base: f{i + 1}.yml\n')
    (tmp_path / 'f40.yml').write_text('seed: 1\n')
    assert qvit(tiny_train(tmp_path, tiny_config, '-c', str(tmp_path / 'f0.yml'))) == 2
    assert f"config file {str(tmp_path / 'f0.yml')!r} reads more than 32 files through its base: chain" \
        in last_line(capsys)


@pytest.mark.parametrize('base', ['5', '[null]', '{a: 1}'])
def test_a_base_that_is_not_a_file_name_is_refused_naming_the_key(tmp_path, capsys, tiny_config, base):
    (tmp_path / 'c.yml').write_text(f'base: {base}\n')
    assert qvit(tiny_train(tmp_path, tiny_config, '-c', str(tmp_path / 'c.yml'))) == 2
    assert f"config key 'base' in {str(tmp_path / 'c.yml')!r} must be a file name or a list" in last_line(capsys)


# --- what a config file may be ---------------------------------------------------------------------------------

def test_a_config_nested_50000_deep_is_refused_naming_the_bound(tmp_path, capsys, tiny_config):
    (tmp_path / 'deep.yml').write_text('lr: ' + '[' * 50_000 + ']' * 50_000 + '\n')
    assert qvit(tiny_train(tmp_path, tiny_config, '-c', str(tmp_path / 'deep.yml'))) == 2
    assert 'deep.yml' in (line := last_line(capsys)) and 'nests lists or mappings more than 100 deep' in line


@pytest.mark.parametrize('content, message', [
    ('name: caf\xe9\n'.encode('latin-1'), 'is not UTF-8 text (byte 9)'),
    (b'\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR', 'is binary (it holds NUL bytes at byte 8)')])
def test_a_binary_or_non_utf8_config_is_refused_naming_the_file(tmp_path, capsys, tiny_config, content, message):
    (tmp_path / 'c.yml').write_bytes(content)
    assert qvit(tiny_train(tmp_path, tiny_config, '-c', str(tmp_path / 'c.yml'))) == 2
    assert f"config file {str(tmp_path / 'c.yml')!r} {message}" in last_line(capsys)


def test_a_fifo_config_is_refused_as_not_a_regular_file(tmp_path, capsys, tiny_config):
    os.mkfifo(tmp_path / 'c.yml')                        # reading it would wait for a writer forever
    assert qvit(tiny_train(tmp_path, tiny_config, '-c', str(tmp_path / 'c.yml'))) == 2
    assert "c.yml' is a FIFO, socket or device, not a regular file" in last_line(capsys)


def test_a_refused_base_file_is_not_quoted_in_the_error(tmp_path, capsys, tiny_config):
    (tmp_path / 'secret').write_text('token: s3cr3t-value: x\n')      # as `base: /etc/shadow` would be
    (tmp_path / 'c.yml').write_text(f"base: {tmp_path / 'secret'}\n")
    assert qvit(tiny_train(tmp_path, tiny_config, '-c', str(tmp_path / 'c.yml'))) == 2
    line = last_line(capsys)
    assert 'secret' in line and 'at line 1, column 20' in line and 's3cr3t' not in line


def test_a_class_count_that_would_allocate_gigabytes_is_refused(tmp_path, capsys, tiny_config):
    assert qvit(tiny_train(tmp_path, tiny_config, '--num-classes', '100000000')) == 2
    assert "config key 'num_classes' must be <= 100000, got 100000000" in last_line(capsys)


# --- --set ---------------------------------------------------------------------------------------------------------

@pytest.fixture
def plain_sweep(tmp_path, tiny_sweep):
    return str(tiny_sweep([{'name': 'fp'}, {'name': 'kd', 'overrides': {'seed': 2}}]))


def test_a_set_alias_bomb_is_refused_by_the_config_bounds_without_echoing_it(tmp_path, capsys, plain_sweep):
    bomb = 'qmodules=[&a [linear], ' + ', '.join(f"&{c} [{', '.join(['*' + p] * 9)}]"
                                                  for p, c in zip('abcde', 'bcdef')) + ']'
    t0 = time.time()
    assert qvit(['sweep', plain_sweep, '--dry-run', '--set', bomb]) == 2
    err = one_line(capsys)
    assert "--set value of 'qmodules' refused: its aliases expand to" in err and len(err) < 300, err[:300]
    assert time.time() - t0 < 30


@pytest.mark.parametrize('item, message', [
    ('tricks=[oops', "--set value of 'tricks' is not valid YAML"),
    ('name=a: b: c', "--set value of 'name' is not valid YAML: mapping values are not allowed here"),
    ('lr=!!python/object/apply:os.system [true]', "--set value of 'lr' is not valid YAML: could not determine a "
                                                  "constructor for the tag")])
def test_a_set_value_that_is_not_plain_yaml_is_refused_in_one_line(capsys, plain_sweep, item, message):
    assert qvit(['sweep', plain_sweep, '--dry-run', '--set', item]) == 2
    assert message in one_line(capsys)


def test_set_of_a_key_the_sweep_sets_per_experiment_is_refused_not_ignored(capsys, plain_sweep):
    assert qvit(['sweep', plain_sweep, '--dry-run', '--set', 'tricks=X', 'name=Y']) == 2
    assert "--set tricks: each experiment's tricks come from the sweep file" in one_line(capsys)


def test_a_huge_unknown_key_is_refused_without_echoing_it(tmp_path, capsys, plain_sweep, tiny_config):
    assert qvit(['sweep', plain_sweep, '--dry-run', '--set', 'k' * 100_000 + '=1']) == 2
    err = one_line(capsys)
    assert f"unknown config key {'k' * 40!r}..." in err and len(err) < 200, err[:300]
    (tmp_path / 'c.yml').write_text('? ' + 'k' * 100_000 + '\n: 1\n')      # an explicit key: any length
    assert qvit(tiny_train(tmp_path, tiny_config, '-c', str(tmp_path / 'c.yml'))) == 2
    assert f"unknown config key {'k' * 40!r}..." in (line := last_line(capsys)) and len(line) < 300

# --- sweep files -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('text, message', [
    ('experiments: [{name: a, overrides: [1, 2]}]\n', "experiment 'a' in {f}: 'overrides' must be a mapping"),
    ('experiments: [{name: a}, {name: b, teacher_from: [a]}]\n', "experiment 'b' in {f}: 'teacher_from' names one"),
    ('workers: many\nexperiments: [{name: a}]\n', "sweep key 'workers' in {f} must be a positive int, got 'many'"),
    ("threads: 'x; touch /tmp/p'\nexperiments: [{name: a}]\n", "sweep key 'threads' in {f} must be a positive"),
    ('base: 5\nexperiments: [{name: a}]\n', "sweep key 'base' in {f} must be a config file's path, got 5"),
    ('slurm: [partition]\nexperiments: [{name: a}]\n', "sweep key 'slurm' in {f} must be a mapping"),
    ('experiments: [{name: a, overrides: {lr: ' + '[' * 50_000 + '}}]\n', "nests lists or mappings more than 100")])
def test_a_sweep_file_value_of_the_wrong_kind_is_refused_naming_the_key(tmp_path, capsys, text, message):
    f = sweep_file(tmp_path, text)
    assert qvit(['sweep', f, '--dry-run']) == 2
    assert message.format(f=f) in one_line(capsys)


def test_a_million_point_grid_is_refused_at_once(tmp_path):
    grid = {k: [round(0.1 * i, 1) for i in range(10)] for k in ('smoothing', 'drop', 'drop_path', 'reprob', 'mixup')}
    grid['seed'] = list(range(10))                 # 10**6 valid points: without the bound, a dry run of an hour
    f = sweep_file(tmp_path, yaml.safe_dump(dict(experiments=[dict(name='a')], grid=grid)))
    p = subprocess.run([sys.executable, '-m', 'qvit_nb.cli', 'sweep', f, '--dry-run'], capture_output=True, text=True,
                       env=ENV, timeout=120)
    assert p.returncode == 2 and "the grid makes 1000000 experiments" in p.stderr and 'at most 1000' in p.stderr


def test_an_unknown_slurm_parameter_is_refused_in_one_line(tmp_path, capsys):
    f = sweep_file(tmp_path, 'slurm: {bogus_key: 1}\nexperiments: [{name: a}]\n')
    assert qvit(['sweep', f, '--executor', 'slurm', '--output', str(tmp_path / 'runs')]) == 2
    assert "sweep key 'slurm': Unknown executor 'bogus' in parameter 'bogus_key'" in one_line(capsys)


# --- where commands write --------------------------------------------------------------------------------------

@pytest.mark.parametrize('where', ['file', 'read-only'])
def test_a_sweep_output_that_is_a_file_or_read_only_is_refused(tmp_path, capsys, plain_sweep, where):
    (tmp_path / 'file').write_text('')
    out = tmp_path / 'file' if where == 'file' else READ_ONLY
    assert qvit(['sweep', plain_sweep, '--output', str(out)]) == 2
    assert f"--output {out}: cannot make or write the sweep folder {out / 'tiny'}" in one_line(capsys)


@pytest.mark.parametrize('command, flag', [('report', '--out'), ('dashboard', '--html')])
def test_report_and_dashboard_into_a_read_only_folder_are_refused(tmp_path, capsys, command, flag):
    target = READ_ONLY / 'qvit-out.html'
    assert qvit([command, str(tmp_path), flag, str(target)]) == 2
    assert f"{flag} {target}: cannot write in {READ_ONLY}" in one_line(capsys)


@pytest.mark.parametrize('command, flag', [('report', '--out'), ('dashboard', '--html')])
def test_report_and_dashboard_onto_a_directory_are_refused(tmp_path, capsys, command, flag):
    assert qvit([command, str(tmp_path), flag, str(tmp_path)]) == 2
    assert f"{tmp_path} is a directory, not a regular file" in one_line(capsys)


def test_a_full_disk_under_the_sweep_registry_stops_the_sweep_in_one_line(tmp_path, capsys, monkeypatch, tiny_sweep):
    import qvit_nb.sweeps as sweeps
    f = tiny_sweep([{'name': 'a'}], name='s')
    sw = sweeps.load_sweep(f)                  # a finished run of a's config: settled (and registered) without a run
    run = tmp_path / 'runs' / 's' / 'r1'
    run.mkdir(parents=True)
    h = sweeps._experiment_config(sw, sw.experiments[0], {}, tmp_path / 'runs' / 's', {})[1]
    (run / 'metrics.json').write_text(json.dumps(dict(status='finished', config_hash=h, best_top1=50.0)))
    real_write = sweeps.atomic_write
    def full_disk(path, data):
        if Path(path).name == 'sweep.json': raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(path, data)
    monkeypatch.setattr(sweeps, 'atomic_write', full_disk)
    assert qvit(['sweep', str(f), '--output', str(tmp_path / 'runs')]) == 2
    assert (f"sweep registry {tmp_path / 'runs' / 's' / 'sweep.json'} cannot be written (No space left on device): "
            f"experiment 'a' (finished, run folder {run}) is not recorded there") in one_line(capsys)


# --- misleading messages ---------------------------------------------------------------------------------------

def test_a_run_diverging_before_its_first_checkpoint_does_not_claim_one_is_kept(tmp_path, capsys, tiny_config):
    bad = dict(tiny_config, norm_layer='batchnorm', opt='sgd', weight_decay=0.0, warmup_epochs=0, lr=1e8)
    assert qvit(['train', *cli_flags(bad), '--output', str(tmp_path), '--experiment', 'bn']) == 1
    err = capsys.readouterr().err
    assert 'training diverged at epoch 0' in err and 'last good checkpoint' not in err, err
    assert f"it diverged before its first checkpoint: {tmp_path / 'bn'} holds none" in err
    assert not (tmp_path / 'bn' / 'last.pth.tar').exists()


def test_exporting_a_run_that_is_still_training_says_so(tmp_path, capsys, tiny_run_copy):
    run = tiny_run_copy('live')
    m = json.loads((run / 'metrics.json').read_text())
    (run / 'metrics.json').write_text(json.dumps({**m, 'status': 'running', 'pid': os.getpid(),
                                                  'host': socket.gethostname()}))
    assert qvit(['export', str(run), '-o', str(tmp_path / 'm.onnx')]) == 0
    assert f"qvit export: note: run {run} is still training" in capsys.readouterr().err
