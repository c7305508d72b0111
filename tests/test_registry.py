"`import qvit_nb` alone registers the models in timm (guards qvit_nb/__init__.py, which nbdev-export rewrites)."
import os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_import_registers_models():
    code = ("import qvit_nb, timm; m = timm.create_model('vit_6_4_32', num_classes=10); "
            "assert sum(p.numel() for p in m.parameters()) == 3190538; "
            "assert set(timm.list_models('cct_7_3x*_32')) == {'cct_7_3x1_32', 'cct_7_3x2_32'}")
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
