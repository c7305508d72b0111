"""The notebooks' numbering is the build order: every module imports, at module level, only lower-numbered ones.
And the notebooks read as tutorials: no exported cell is longer than `MAX_EXPORT_LINES`."""
import ast, json, re
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
    assert {'core', 'quant', 'train', 'config', 'results', 'sweeps'} <= set(mods), mods
    upward = [(mods[m], mods[d]) for m in mods for d in _package_imports(ROOT / 'qvit_nb' / f'{m}.py')
              if d in mods and mods[d] >= mods[m]]
    assert not upward, f"notebooks importing a later (or the same) notebook: {upward}"


MAX_EXPORT_LINES = 90   # a class that needs more is built across cells (`@patch`), each step introduced and tested
_EXPORT = re.compile(r'^#\|\s*export[is]?\s*$')


def _long_export_cells(limit: int = MAX_EXPORT_LINES) -> list:
    "(notebook, cell id, lines) of every `#| export` code cell in nbs/ longer than `limit` lines."
    out = []
    for nb in sorted((ROOT / 'nbs').glob('*.ipynb')):
        for cell in json.loads(nb.read_text())['cells']:
            lines = ''.join(cell['source']).splitlines()
            if cell['cell_type'] == 'code' and any(_EXPORT.match(l.strip()) for l in lines if l.startswith('#|')) and len(lines) > limit:
                out.append((nb.name, cell.get('id'), len(lines)))
    return out


def test_long_export_cells_are_found():
    "The check itself: it counts a cell's lines (directive included) and sees `#| export` among other directives."
    assert _EXPORT.match('#| export') and _EXPORT.match('#|exporti') and not _EXPORT.match('#| export_name')
    longest = max(n for nb in (ROOT / 'nbs').glob('*.ipynb') for c in json.loads(nb.read_text())['cells']
                  if c['cell_type'] == 'code' and ''.join(c['source']).startswith('#| export')
                  for n in [len(''.join(c['source']).splitlines())])
    assert _long_export_cells(longest - 1), longest
    assert not _long_export_cells(longest)


def test_no_long_export_cells():
    long = _long_export_cells()
    assert not long, (f"exported notebook cells longer than {MAX_EXPORT_LINES} lines (split them: `@patch` the methods "
                      "of a class across cells, each introduced by a markdown cell and followed by its tests): "
                      + '; '.join(f"{nb} cell {cid}: {n} lines" for nb, cid, n in long))
