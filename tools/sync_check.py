"""The gate's first check (`make sync-check`): the notebooks are stored clean in git, and `qvit_nb/` is exactly what
`nbdev-export` makes of `nbs/`.

Using a notebook as a user does (open it in Jupyter, Run All, save) adds outputs, execution counts and kernel
metadata to the file. That must never fail the gate, so the check does not compare the working notebooks with git:
1. it cleans the working notebooks in place (`nbdev-clean`: counts and metadata go, outputs stay);
2. it checks the *committed* notebooks (HEAD) are stored as `nbdev-clean` leaves them;
3. it runs `nbdev-export` and fails if that changed anything under `qvit_nb/`.
Each failure prints the exact command that fixes it. Exit status: 0 in sync, 1 otherwise."""
import hashlib, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _shown(cmd: str) -> str:
    "How to type `cmd` from the repository root."
    p = BIN / cmd
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def _git(*args) -> bytes:
    return subprocess.run(['git', *args], cwd=ROOT, capture_output=True, check=True).stdout


def _nbdev(cmd: str, *args):
    subprocess.run([str(BIN / cmd), *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def unclean_committed() -> list:
    "The committed notebooks (HEAD) that `nbdev-clean` would change."
    names = _git('ls-files', 'nbs/*.ipynb').decode().split()
    stored = {n: _git('show', f'HEAD:{n}') for n in names}
    with tempfile.TemporaryDirectory() as d:
        for n, blob in stored.items(): (Path(d) / Path(n).name).write_bytes(blob)
        _nbdev('nbdev-clean', '--fname', d)
        return [n for n, blob in stored.items() if (Path(d) / Path(n).name).read_bytes() != blob]


def _package_state() -> dict:
    "Each file under qvit_nb/ (caches aside) -> a hash of its contents."
    return {str(p.relative_to(ROOT)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted((ROOT / 'qvit_nb').rglob('*')) if p.is_file() and '__pycache__' not in p.parts}


def main() -> int:
    _nbdev('nbdev-clean')
    bad = unclean_committed()
    if bad:
        print(f"committed notebooks not stored clean: {', '.join(bad)}. "
              f"Fix: `{_shown('nbdev-clean')}`, then commit them")
        return 1
    before = _package_state()
    _nbdev('nbdev-export')
    after = _package_state()
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    if changed:
        print(f"qvit_nb/ was not what nbdev-export makes of nbs/: {', '.join(changed)}. "
              f"Fix: `{_shown('nbdev-export')}` (just run by this check), then commit nbs/ and qvit_nb/ together")
        return 1
    return 0


if __name__ == '__main__': sys.exit(main())
