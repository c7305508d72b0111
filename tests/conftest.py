"""Fixtures the test files share: the tiny training config, a tiny trained run and a tiny sweep.

A test that needs a variant derives it from the fixture (`{**tiny_config, 'epochs': 3}`) and says why; the config
itself is read-only, so no test can change what another one trains."""
import contextlib, io, json, shutil, subprocess, sys
from pathlib import Path
from types import MappingProxyType

import pytest
import yaml

from flags import ENV, cli_flags

@pytest.fixture(scope='session')
def tiny_config():
    """The package's tiny config (`qvit_nb.config.tiny_config`: one epoch of the 2-layer ViT-Lite on 64 digits, no
    extras) with a fixed normalisation, read-only: `train(**tiny_config)`, `cli_flags(tiny_config)`,
    `{**tiny_config, ...}`. Seconds on one CPU core."""
    from qvit_nb.config import tiny_config as config
    return MappingProxyType(config(mean=[0.5] * 3, std=[0.5] * 3))


@pytest.fixture(scope='session')
def tiny_run(tiny_config, tmp_path_factory) -> Path:
    """The run directory of the tiny config trained for two epochs (so it has a `last-prev.pth.tar` of epoch 0),
    trained once per pytest worker. Read it in place; a test that changes it works on a copy (`tiny_run_copy`)."""
    out = tmp_path_factory.mktemp('tiny_run')
    from qvit_nb.train import train
    with contextlib.redirect_stdout(io.StringIO()):
        train(**{**tiny_config, 'epochs': 2}, output=str(out), experiment='tiny')
    return out / 'tiny'


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path):
    """`tiny_run_copy(name)`: a copy of `tiny_run` at `tmp_path / name` (file times kept) whose `metrics.json` names it
    by its folder, as a run trained there as experiment `name` would."""
    def copy(name: str) -> Path:
        dest = tmp_path / name
        shutil.copytree(tiny_run, dest)
        m = json.loads((dest / 'metrics.json').read_text())
        (dest / 'metrics.json').write_text(json.dumps({**m, 'run_id': name}))
        return dest
    return copy


@pytest.fixture
def qvit_train(tiny_config):
    """`qvit_train(output, experiment, extra=(), **over)` starts `qvit train` of the tiny config (`over` on top) in a
    subprocess and returns its `Popen`: text, stderr merged into `.stdout`."""
    def start(output, experiment: str, extra=(), **over) -> subprocess.Popen:
        cmd = [sys.executable, '-m', 'qvit_nb.cli', 'train', '--output', str(output), '--experiment', experiment,
               *cli_flags({**tiny_config, **over}), *extra]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    return start


@pytest.fixture
def tiny_sweep(tmp_path, tiny_config):
    """`tiny_sweep(experiments, name='tiny', base=None, inline=False, **keys)` writes `tmp_path / 'sweep.yml'` (plus
    the sweep's other `keys`) and returns its path. The tiny config (with the keys of `base` on top) is its
    `base.yml`; `inline=True` writes no base file and puts the config into each experiment's overrides instead."""
    def write(experiments: list, name: str = 'tiny', base: dict | None = None, inline: bool = False, **sweep) -> Path:
        config = {**tiny_config, **(base or {})}
        if inline: experiments = [{**e, 'overrides': {**config, **e.get('overrides', {})}} for e in experiments]
        else:
            (tmp_path / 'base.yml').write_text(yaml.safe_dump(config))
            sweep = {'base': 'base.yml', **sweep}
        (tmp_path / 'sweep.yml').write_text(yaml.safe_dump({'name': name, **sweep, 'experiments': experiments}))
        return tmp_path / 'sweep.yml'
    return write
