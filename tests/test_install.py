"""`qvit sweep` from a regular (non-editable) install: a fresh venv, the project installed into it as a wheel would be,
run from a working directory outside the repository. The run template is package data, so nothing may depend on the
source tree or on the working directory. Offline: the new venv borrows the project venv's dependencies through a
`.pth` file, and pip builds the project from a copy of its files with the setuptools already installed."""
import json, os, shutil, site, subprocess, sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _run(cmd, cwd, env, timeout=900):
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_qvit_sweep_works_from_a_non_editable_install(tmp_path, tiny_config):
    # A user's environment: no PYTHONPATH into a checkout, no package index for pip, the new venv's bin first.
    venv, work = tmp_path / 'venv', tmp_path / 'elsewhere'
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME', 'PYTHONSTARTUP', 'VIRTUAL_ENV')}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", PIP_NO_INDEX='1',
               PIP_DISABLE_PIP_VERSION_CHECK='1', OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    python = venv / 'bin' / 'python'

    # A venv from the base interpreter, without pip; a .pth line puts the project venv's site-packages on its path.
    # A .pth line is only added to sys.path: the .pth files inside that folder (the editable install's) are not run.
    base_python = getattr(sys, '_base_executable', sys.executable)
    r = _run([base_python, '-m', 'venv', '--without-pip', venv], work, env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    deps = [Path(p) for p in site.getsitepackages() if Path(p).is_dir()]
    editable = sorted(f.name for d in deps for f in d.glob('__editable__*'))
    purelib = _run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], work, env).stdout
    purelib = Path(purelib.strip())
    (purelib / 'project_deps.pth').write_text(''.join(f"{d}\n" for d in deps))
    r = _run([python, '-c', 'import torch, papermill, pip, setuptools, qvit_nb'], work, env)
    # the dependencies are seen, the editable install is not
    assert "No module named 'qvit_nb'" in r.stderr, r.stderr[-2000:]

    # Install a copy of the project (pip would otherwise write build files into the checkout): not editable, offline.
    src = tmp_path / 'src'
    shutil.copytree(REPO / 'qvit_nb', src / 'qvit_nb', ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    for f in ('pyproject.toml', 'README.md'): shutil.copy(REPO / f, src / f)
    r = _run([python, '-m', 'pip', 'install', '--no-deps', '--no-build-isolation', '--ignore-installed', src],
             work, env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    shutil.rmtree(src)   # the installed copy is all that is left of the project's files
    assert sorted(f.name for d in deps for f in d.glob('__editable__*')) == editable    # the project venv is untouched

    # The package, its template and the kernel papermill starts all come from the new venv.
    r = _run([python, '-c', 'import qvit_nb, qvit_nb.sweeps as r; from jupyter_client import KernelManager as K; '
              'print(qvit_nb.__file__, r.train_notebook(), K(kernel_name="python3").format_kernel_cmd()[0])'],
             work, env)
    assert r.returncode == 0, r.stderr[-2000:]
    package, template, kernel = map(Path, r.stdout.split())
    assert all(p.is_relative_to(venv) for p in (package, template, kernel)) and template.is_file(), r.stdout

    # `qvit sweep` of one tiny experiment, from a folder outside the repository.
    (work / 'base.yml').write_text(yaml.safe_dump(dict(tiny_config)))
    sweep = {'name': 'installed', 'base': 'base.yml', 'experiments': [{'name': 'fp'}]}
    (work / 'sweep.yml').write_text(yaml.safe_dump(sweep))
    # >= 10x a quiet run
    r = _run([venv / 'bin' / 'qvit', 'sweep', 'sweep.yml', '--output', 'runs'], work, env, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    record = json.loads((work / 'runs' / 'installed' / 'sweep.json').read_text())['fp']
    run_dir = work / record['run_dir']                    # relative to the sweep's working directory, or absolute
    assert record['status'] == 'finished' and record.get('report_error') is None, record
    assert json.loads((run_dir / 'metrics.json').read_text())['status'] == 'finished'
    report = json.loads((run_dir / 'train.ipynb').read_text())
    assert Path(report['metadata']['papermill']['input_path']) == template     # executed from the installed package
    outputs = json.dumps([c.get('outputs', []) for c in report['cells']])
    assert '## Activation histograms' in outputs and 'A float model: no activation is quantized.' in outputs
