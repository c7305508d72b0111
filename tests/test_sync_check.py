"""`make sync-check` (tools/sync_check.py) on a fresh clone: a notebook executed and saved with its outputs passes;
a package file that is not what nbdev-export makes fails with the command that fixes it (and the export is done);
a committed notebook that is not stored clean fails with the command that fixes it."""
import json, shutil, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clone(tmp_path):
    if not (ROOT / '.git').exists(): pytest.skip('not a git checkout')
    dst = tmp_path / 'repo'
    subprocess.run(['git', 'clone', '-q', '--no-hardlinks', str(ROOT), str(dst)], check=True)
    subprocess.run(['git', '-C', str(dst), 'config', 'user.email', 't@t'], check=True)
    subprocess.run(['git', '-C', str(dst), 'config', 'user.name', 't'], check=True)
    (dst / 'tools').mkdir(exist_ok=True)
    shutil.copy(ROOT / 'tools' / 'sync_check.py', dst / 'tools' / 'sync_check.py')   # the version under test
    return dst


def _check(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, 'tools/sync_check.py'], cwd=repo, capture_output=True, text=True)


def test_a_notebook_run_and_saved_passes(clone):
    from nbclient import NotebookClient
    import nbformat
    path = clone / 'nbs' / '00_core.ipynb'
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=120, resources={'metadata': {'path': str(path.parent)}}).execute()
    code = [c for c in nb.cells if c.cell_type == 'code']
    assert all(c.execution_count for c in code)
    code[-2].outputs = [nbformat.v4.new_output('stream', name='stdout', text='what a cell printed\n')]
    nbformat.write(nb, path)                                   # what Jupyter's save writes
    r = _check(clone)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_package_out_of_sync_fails_with_the_fix(clone):
    core = clone / 'qvit_nb' / 'core.py'
    original = core.read_text()
    core.write_text(original + '\nEDITED_BY_HAND = 1\n')
    r = _check(clone)
    assert r.returncode == 1 and 'nbdev-export`' in r.stdout, r.stdout
    assert 'qvit_nb/core.py' in r.stdout and core.read_text() == original


def test_a_committed_unclean_notebook_fails_with_the_fix(clone):
    path = clone / 'nbs' / '00_core.ipynb'
    nb = json.loads(path.read_text())
    next(c for c in nb['cells'] if c['cell_type'] == 'code')['execution_count'] = 7
    path.write_text(json.dumps(nb, indent=1) + '\n')
    subprocess.run(['git', '-C', str(clone), 'commit', '-qam', 'unclean'], check=True)
    r = _check(clone)
    assert r.returncode == 1 and 'nbs/00_core.ipynb' in r.stdout and 'nbdev-clean`' in r.stdout, r.stdout
