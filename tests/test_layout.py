"The notebooks' numbering is the build order: every module imports, at module level, only lower-numbered ones."
import ast, json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> dict:
    "module name -> its notebook's stem (from `#| default_exp`)."
    out = {}
    for nb in sorted((ROOT / 'nbs').glob('*.ipynb')):
        first = ''.join(json.loads(nb.read_text())['cells'][0]['source'])
        if 'default_exp' in first: out[first.split('default_exp')[1].split()[0]] = nb.stem
    return out


def _package_imports(path: Path) -> set:
    "The qvit_nb modules a generated module imports at module level (lazy imports inside functions are not counted)."
    got = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module: got.add(node.module.split('.')[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith('qvit_nb.'): got.add(node.module.split('.')[1])
        elif isinstance(node, ast.Import): got |= {a.name.split('.')[1] for a in node.names if a.name.startswith('qvit_nb.')}
    return got


def test_numbering_is_build_order():
    mods = _modules()
    assert {'core', 'quant', 'train', 'config', 'runs'} <= set(mods), mods
    upward = [(mods[m], mods[d]) for m in mods for d in _package_imports(ROOT / 'qvit_nb' / f'{m}.py')
              if d in mods and mods[d] >= mods[m]]
    assert not upward, f"notebooks importing a later (or the same) notebook: {upward}"
