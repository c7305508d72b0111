"""The CIFAR unpickler cannot be crashed: crafted and mutated pickles, built only from the globals it allows, either
load as plain data or raise `pickle.UnpicklingError`. Each case runs in a child process, so a SIGSEGV (what a crafted
numpy dtype state once caused) fails the test instead of killing pytest. Data that cannot be represented exactly (float
or out-of-range CIFAR pixels, 16-bit PNGs) is refused or converted correctly, never wrapped or clipped; a folder walk
that would not end and a decompression bomb end `qvit train` in one line, exit 2."""
import pickle, subprocess, sys, textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

FUZZ = textwrap.dedent('''
    import pickle, random, sys, tempfile
    from pathlib import Path
    import numpy as np
    from numpy._core.multiarray import _reconstruct
    from qvit_nb.unpickle import safe_pickle_load

    class Dt:                       # a dtype with an arbitrary state: byte order, flags, sizes
        def __init__(self, spec, state): self.spec, self.state = spec, state
        def __reduce__(self): return (np.dtype, (self.spec, False, True), self.state)
    class Arr:                      # an array with an arbitrary state
        def __init__(self, state): self.state = state
        def __reduce__(self): return (_reconstruct, (np.ndarray, (0,), b'b'), self.state)

    rng = random.Random(int(sys.argv[1]))
    batch = {'batch_label': 'training batch 1 of 5', 'labels': [rng.randrange(10) for _ in range(8)],
             'data': np.random.default_rng(0).integers(0, 256, (8, 3072), dtype=np.uint8), 'filenames': ['a.png'] * 8}
    seeds = [pickle.dumps(batch, protocol=p) for p in (2, 4, 5)]
    cases = []
    for _ in range(150):                                   # crafted dtype states and array states
        spec = rng.choice(['u1', 'i8', 'f4', 'b1', 'O', 'V8'])
        state = (rng.choice([3, 4, 99]), rng.choice(['|', '<', '>', '=']), None, None, None,
                 rng.choice([-1, 1, 8, 2**31]), rng.choice([-1, 1, 16]), rng.randrange(-1, 1024))
        shape = tuple(rng.randrange(0, 9) for _ in range(rng.randrange(0, 4)))
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
        cases.append(pickle.dumps({'data': Arr((1, shape, Dt(spec, state), rng.random() < .5, data))}, protocol=2))
    for _ in range(250):                                   # random damage to honest pickles
        b = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 6)):
            op, i = rng.randrange(3), rng.randrange(len(b))
            if op == 0: b[i] = rng.randrange(256)
            elif op == 1: del b[i:i + rng.randrange(1, 64)]
            else: b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        cases.append(bytes(b))
    path = Path(tempfile.mkdtemp()) / 'batch.pkl'
    loaded = refused = 0
    for i, c in enumerate(cases):
        path.write_bytes(c)
        try: obj = safe_pickle_load(path)
        except pickle.UnpicklingError: refused += 1; continue
        repr(obj)                                          # whatever loads is plain data that can be looked at
        loaded += 1
    print(f"{len(cases)} cases: {loaded} loaded, {refused} refused")
''')


def test_crafted_and_mutated_pickles_never_crash_the_loader():
    for seed in (0, 1):
        r = subprocess.run([sys.executable, '-c', FUZZ, str(seed)], capture_output=True, text=True, timeout=600,
                           env={'PYTHONPATH': str(ROOT), 'PATH': '/usr/bin:/bin', 'OMP_NUM_THREADS': '1'})
        assert r.returncode == 0, f"seed {seed}: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        assert '400 cases' in r.stdout and 'refused' in r.stdout, r.stdout


CRAFTED = textwrap.dedent('''
    import pickle, sys
    from pathlib import Path
    import numpy as np
    from numpy._core.multiarray import _reconstruct

    class Dt:                       # uint8 with the flags of an object dtype (what once crashed numpy)
        def __reduce__(self): return (np.dtype, ('u1', False, True), np.dtype('u1').__reduce__()[2][:-1] + (63,))
    class Arr:
        def __reduce__(self): return (_reconstruct, (np.ndarray, (0,), b'b'), (1, (2, 3072), Dt(), False, bytes(6144)))
    d = Path(sys.argv[1]) / 'cifar-10-batches-py'; d.mkdir(parents=True)
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        (d / name).write_bytes(pickle.dumps({'data': Arr(), 'labels': [0, 1]}, protocol=2))
    (d / 'batches.meta').write_bytes(pickle.dumps({'label_names': [str(i) for i in range(10)]}, protocol=2))
''')


def test_a_crafted_cifar_batch_ends_qvit_train_in_one_line_with_exit_2(tmp_path):
    env = {'PYTHONPATH': str(ROOT), 'PATH': '/usr/bin:/bin', 'OMP_NUM_THREADS': '1'}
    subprocess.run([sys.executable, '-c', CRAFTED, str(tmp_path / 'data')], check=True, env=env, timeout=600)
    r = subprocess.run([sys.executable, '-m', 'qvit_nb.cli', 'train', '--dataset', 'cifar10',
                        '--data-dir', str(tmp_path / 'data'), '--model', 'vit_2_4_32', '--epochs', '1',
                        '--workers', '0', '--output', str(tmp_path / 'runs')],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert 'Traceback' not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr[-3000:]
    assert 'data_batch_1: refusing dtype state' in r.stderr


def _qvit_train(tmp_path, *data, timeout=180):
    "`qvit train` of one tiny epoch on `data` (dataset flags) in a child process; a hang fails the test, not pytest."
    env = {'PYTHONPATH': str(ROOT), 'PATH': '/usr/bin:/bin', 'OMP_NUM_THREADS': '1'}
    cmd = [sys.executable, '-m', 'qvit_nb.cli', 'train', *data, '--model', 'vit_2_4_32', '--epochs', '1',
           '--batch-size', '4', '--workers', '0', '--output', str(tmp_path / 'runs')]
    try: return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired: raise AssertionError(f"qvit train {' '.join(data)} hung ({timeout} s)") from None


def _one_line_exit_2(r, *expected):
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert 'Traceback' not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr[-3000:]
    assert all(e in r.stderr for e in expected), r.stderr


@pytest.mark.parametrize('data, value', [(np.full((20, 3072), 0.7), '0.7'), (np.full((20, 3072), 300), '300')])
def test_cifar_pixels_that_are_not_bytes_are_refused_not_wrapped(tmp_path, data, value):
    "A float batch was cast with wrap-around (0.7 -> 0, 300 -> 44): now one line names the value and where it is."
    from qvit_nb.data import write_cifar_fixture
    d = write_cifar_fixture(tmp_path / 'data')
    batch = pickle.loads((d / 'data_batch_1').read_bytes())
    (d / 'data_batch_1').write_bytes(pickle.dumps({**batch, 'data': data}, protocol=2))
    r = _qvit_train(tmp_path, '--dataset', 'cifar10', '--data-dir', str(tmp_path / 'data'))
    _one_line_exit_2(r, f"'data'[0, 0] is {value}, not a whole number from 0 to 255", 'data_batch_1')


def _folder(tmp_path):
    from qvit_nb.data import write_folder_fixture
    for split in ('train', 'test'): write_folder_fixture(tmp_path / 'data' / split, per_class=2)
    return tmp_path / 'data'


def test_a_link_loop_in_an_image_folder_is_refused_in_one_line(tmp_path):
    "Two `.` links in a class folder made the folder walk (it follows links) run for good."
    cat = _folder(tmp_path) / 'train' / 'cat'
    (cat / 'here').symlink_to('.'); (cat / 'again').symlink_to('.')
    r = _qvit_train(tmp_path, '--dataset', 'folder', '--data-dir', str(tmp_path / 'data'), timeout=120)
    _one_line_exit_2(r, 'a link loop, or two links to one folder')


def test_a_decompression_bomb_is_refused_in_one_line(tmp_path):
    "A PNG of a few hundred bytes declaring 20000 x 20000 pixels ended `qvit train` in PIL's traceback."
    from qvit_nb.data import write_png_header
    bomb = write_png_header(_folder(tmp_path) / 'train' / 'cat' / '0000.png', 20000, 20000)
    assert bomb.stat().st_size < 200
    r = _qvit_train(tmp_path, '--dataset', 'folder', '--data-dir', str(tmp_path / 'data'))
    _one_line_exit_2(r, f"{bomb} declares over 178,956,970 pixels (at most 89,478,485): not decoded")


def test_a_16_bit_png_is_rescaled_not_clipped(tmp_path):
    "A 16-bit grey PNG was clipped to 8 bits (most pixels became 255); now 0..65535 maps onto 0..255."
    from PIL import Image
    from qvit_nb.data import load_folder
    grey = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 60).astype(np.uint16)
    Image.fromarray(grey).save(_folder(tmp_path) / 'train' / 'cat' / '0000.png')
    ds = load_folder(tmp_path / 'data')
    i = next(i for i in range(len(ds)) if ds.reader.filename(i).endswith('cat/0000.png'))
    rgb = np.asarray(ds[i][0])
    assert (rgb == np.round(grey / 257).astype(np.uint8)[..., None]).all()
    assert (rgb == 255).mean() < 0.01


def test_a_fifo_as_an_image_is_refused_in_one_line(tmp_path):
    "A FIFO named like an image would block the folder reader's open() for good."
    import os
    fifo = _folder(tmp_path) / 'train' / 'cat' / '9999.png'
    os.mkfifo(fifo)
    r = _qvit_train(tmp_path, '--dataset', 'folder', '--data-dir', str(tmp_path / 'data'), timeout=120)
    _one_line_exit_2(r, f"{fifo} is not a regular file (a FIFO")
