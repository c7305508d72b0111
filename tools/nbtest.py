"""`make test`'s notebook step: nbdev-test, and a notebook whose cells write to stderr fails too.

A warning, a log line or anything else on stderr shows as a pink box in Jupyter; the tutorials must show none that
the reader did not cause. This runs nbdev's own test runner (same cells, flags and workers as `nbdev-test`) and keeps
each notebook's outputs in memory (nbdev's `save`, without writing the file), then lists every stderr output.
Usage: python tools/nbtest.py [NOTEBOOK_OR_FOLDER] [--n-workers N] (nbdev-test's arguments)"""
import sys
import nbdev.test as nbt

_run_notebook = nbt.test_nb


def stderr_outputs(nb) -> list:
    "(cell id, text) of every stderr stream in an executed notebook."
    return [(getattr(c, 'id', '?'), ''.join(o.get('text', '')))
            for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])
            if o.get('output_type') == 'stream' and o.get('name') == 'stderr']


def test_nb_without_stderr(fn, **kwargs):
    "nbdev's `test_nb`, failing also when a cell wrote to stderr."
    kept = []
    nbt.write_nb = lambda nb, path: kept.append(nb)      # `save=True` hands us the executed notebook
    ok, seconds = _run_notebook(fn, **{**kwargs, 'save': True})
    if ok and kept and (errs := stderr_outputs(kept[0])):
        sys.__stderr__.write(f"{fn}: {len(errs)} cell(s) wrote to stderr (a warning or log line the reader did not "
                             "cause: silence or fix it):\n" + ''.join(f"  cell {cid}: {text.strip()[:400]}\n"
                                                                         for cid, text in errs))
        return False, seconds
    return ok, seconds


if __name__ == '__main__':
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import nbtest     # the workers unpickle the test function by module name: `nbtest`, not `__main__`
    nbt.test_nb = nbtest.test_nb_without_stderr
    nbt.nbdev_test()  # nbdev-test's own arguments: a notebook or folder, --n-workers, --flags, ...
