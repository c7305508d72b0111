"""The numeric checks hold whatever vector width ATen's CPU kernels use (issue #13): `nbs/00a_lsq.ipynb` (the LSQ
forward and gradients) and `nbs/00b_fastpaths.ipynb` (the fused/folded/int8 paths against them) run again in a fresh
process under other `ATEN_CPU_CAPABILITY` values, which change the order of vectorised sums and so their rounding."""
import os, platform, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = [ROOT / 'nbs' / '00a_lsq.ipynb', ROOT / 'nbs' / '00b_fastpaths.ipynb']
RUN = ("import sys, torch; from nbdev.test import test_nb\n"
       "print('capability', torch.backends.cpu.get_cpu_capability(), flush=True)\n"
       "ok, _ = test_nb(sys.argv[1], verbose=False)\n"
       "sys.exit(0 if ok else 1)\n")


@pytest.mark.slow
@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.stem)
@pytest.mark.parametrize('capability', ['avx2', 'default'])
def test_quant_notebook_under_cpu_capability(capability, nb):
    if capability == 'avx2' and platform.machine().lower() not in ('x86_64', 'amd64'):
        pytest.skip(f'ATEN_CPU_CAPABILITY=avx2 needs an x86-64 CPU, this is {platform.machine()}')
    env = {**os.environ, 'ATEN_CPU_CAPABILITY': capability, 'OMP_NUM_THREADS': '1',
           'PYTHONPATH': os.pathsep.join([str(ROOT), *filter(None, [os.environ.get('PYTHONPATH')])])}
    # ~30 s quiet here; the limit is far above it, so only a hang fails on time
    r = subprocess.run([sys.executable, '-c', RUN, str(nb)], cwd=nb.parent, env=env, capture_output=True, text=True,
                       timeout=1200)
    out = r.stdout + r.stderr
    assert f'capability {capability.upper()}' in r.stdout, out[-3000:]      # the capability took effect
    assert r.returncode == 0, out[-3000:]
