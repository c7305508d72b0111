"""Every cheap notebook of nbs/ runs top to bottom as a user runs it: `jupyter nbconvert --to notebook --execute`
semantics through nbclient, in nbs/ as working directory, *including* the cells nbdev-test skips (`#| eval: false`,
such as 11_demo's dashboards, which find `runs/demo` or train a tiny stand-in). Only the last cell,
`nbdev.nbdev_export()`, is left out: it would rewrite `qvit_nb/` from a test. The notebooks not listed here take
minutes (training, compilation, sweeps, DDP); nbdev-test runs their tests."""
import os, time
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
# Seconds for the whole notebook, kernel start included, measured on the 2-core development machine while other jobs
# ran (upper bounds of the quiet time); each cell gets ten times the notebook's, and at least two minutes.
QUIET_SECONDS = {'03_distill.ipynb': 43, '04a_data.ipynb': 28, '05_config.ipynb': 39, '09_dashboard.ipynb': 60}


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(QUIET_SECONDS))
def test_notebook_runs_top_to_bottom(name, tmp_path):
    from nbclient import NotebookClient
    nb = nbformat.read(REPO / 'nbs' / name, as_version=4)
    nb.cells = [c for c in nb.cells if 'nbdev_export()' not in c.source]
    env_before = os.environ.get('PYTHONPATH')
    os.environ['PYTHONPATH'] = os.pathsep.join([str(REPO), env_before or '']).rstrip(os.pathsep)
    try:
        t0 = time.monotonic()
        NotebookClient(nb, timeout=max(10 * QUIET_SECONDS[name], 120), kernel_name='python3',
                       resources={'metadata': {'path': str(REPO / 'nbs')}}).execute()   # raises on the first error
    finally:
        if env_before is None: os.environ.pop('PYTHONPATH', None)
        else: os.environ['PYTHONPATH'] = env_before
    errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs if o.output_type == 'error']
    assert not errors
    # no pink box: in a real kernel too (widgets talk to it: a NaN in a figure warned here, not under nbdev-test)
    stderr = [o.text for c in nb.cells if c.cell_type == 'code' for o in c.outputs
              if o.output_type == 'stream' and o.name == 'stderr']
    assert not stderr, stderr[0][:2000]
    print(f"{name}: {time.monotonic() - t0:.1f} s")
