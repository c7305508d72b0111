"""Every command of the README's bash blocks works as written from the repository root. Each one runs here, in the
README's order, with its placeholders filled in (DATA: a tiny CIFAR-10 in torchvision's layout; `runs/<id>`: runs
this test trains) and, for the long ones, tiny settings added (one epoch on 20 images). A command that the README
gains and this file does not know fails the test, so each new command gets its check. Three are checked elsewhere:
`make test` is what CI runs, `make lab` is JupyterLab driven in chromium (test_dashboard_browser.py, as is the Voila
command of the prose), and the multi-GPU `torchrun` line is DDP on gloo (test_ddp.py)."""
import re, shlex, subprocess, sys
from pathlib import Path

import pytest

from flags import ENV

REPO = Path(__file__).resolve().parents[1]
ELSEWHERE = {'make test': '.ci/run', 'make lab': 'test_dashboard_browser.py',
             'torchrun --nproc_per_node 4 -m qvit_nb.cli train -c CONFIG DATA ...': 'test_ddp.py'}
TINY_TRAIN = ['--epochs', '1', '--max-images', '20', '--batch-size', '10', '--workers', '0']
TINY_SWEEP = ['epochs=1', 'max_images=20', 'batch_size=10', 'workers=0']


def readme_commands(text: str) -> list:
    "The command lines of the README's bash blocks: continuation lines joined, comments and extra spaces dropped."
    lines = [re.sub(r'\s+#.*$', '', line) for block in re.findall(r'```bash\n(.*?)```', text, re.S)
             for line in block.replace('\\\n', ' ').splitlines()]
    return [' '.join(line.split()) for line in lines if line.strip()]


def test_readme_commands_are_parsed():
    text = "x\n```bash\nmake demo   # set up\nqvit train -c A DATA \\\n  --lr 1  # go\n```\n```python\nno\n```\n"
    assert readme_commands(text) == ['make demo', 'qvit train -c A DATA --lr 1']


def _tiny_form(cmd: str, data: Path, out: Path, teacher: Path) -> list:
    "The argv that runs `cmd` here: placeholders filled in, files written under `out`, tiny settings for what trains."
    run = next(iter(sorted((out / 'multistep').glob('*cct*'))), out / 'multistep' / 'cct')   # the sweep's run
    cmd = (cmd.replace('runs/<sweep>/<run id>', 'RUN_DIR').replace('runs/<id>/model_best.pth.tar', 'TEACHER')
              .replace('[-o model.onnx]', '-o model.onnx').replace('/data/cifar10', str(data)))
    named = {'DATA': data, 'RUN_DIR': run, 'TEACHER': teacher, 'model.onnx': out / 'model.onnx',
             'results.html': out / 'results.html'}
    argv = [str(named.get(a, str(out) + a[4:] if a.startswith('runs/') else a)) for a in shlex.split(cmd)]
    if argv == ['make', 'demo']:          # `qvit demo`'s sweep, tiny, into this test's folder
        return ['qvit', 'sweep', 'configs/sweeps/demo.yml', '--output', str(out / 'demo'), '--set', *TINY_SWEEP]
    if argv[:2] == ['qvit', 'train']: return argv + TINY_TRAIN + ['--output', str(out / 'train')]
    if argv[:2] == ['qvit', 'sweep'] and '--set' in argv:
        at = argv.index('--set') + 2                                 # after the README's own KEY=VALUE
        return argv[:at] + TINY_SWEEP + argv[at:] + ['--output', str(out), '--only', 'cct']
    return argv


@pytest.mark.slow
def test_every_readme_command_runs_from_the_repository_root(tmp_path):
    from qvit_nb.config import tiny_config
    from qvit_nb.data import write_cifar_fixture
    from qvit_nb.train import train
    import contextlib, io
    commands = readme_commands((REPO / 'README.md').read_text())
    known = [c for c in commands if c not in ELSEWHERE]
    assert all(c.split()[0] == 'qvit' or c == 'make demo' for c in known), known   # a form here for each
    data, out = tmp_path / 'cifar10', tmp_path / 'runs'
    write_cifar_fixture(data)
    with contextlib.redirect_stdout(io.StringIO()):                # the README's teacher: a vit_6_4_32 run
        train(**tiny_config(dataset='cifar10', data_dir=str(data), model='vit_6_4_32', max_images=20, batch_size=10,
                            output=str(tmp_path / 'teacher'), experiment='t'))
    teacher = tmp_path / 'teacher' / 't' / 'model_best.pth.tar'
    ran = []
    for cmd in known:
        argv = _tiny_form(cmd, data, out, teacher)
        exe = [sys.executable, '-m', 'qvit_nb.cli', *argv[1:]]
        r = subprocess.run(exe, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"README command failed: {cmd}\nran: {' '.join(exe)}\n{(r.stdout + r.stderr)[-3000:]}"
        ran.append(cmd)
    assert len(ran) == len(known) >= 8, ran
    assert (out / 'model.onnx').is_file() and (out / 'results.html').is_file()
    assert len(list((out / 'demo').rglob('metrics.json'))) == 2                      # `make demo`'s two runs
