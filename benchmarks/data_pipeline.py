"""Loader throughput: the standard timm pipeline (PIL transforms in DataLoader workers) vs the tensor-resident path.

    python benchmarks/data_pipeline.py [--data-dir ../shared/data/cifar10] [--batches 40] [--model-ips 90]

Data: the CIFAR-10 class-folder tars at ../shared/data/cifar10 (train.tar, test.tar; relative to the repo root).
When that directory is absent the script says so and falls back to a CIFAR-like random dataset written in
torchvision's layout to a temporary directory (same 32x32 uint8 images, so the per-image cost is comparable
except for JPEG decoding).

Each row is measured after one warm-up batch (worker start-up excluded). The tensor path runs in the main
process with `--threads` torch threads (default 1): on 2 cores shared with DataLoader workers or other jobs,
OpenMP oversubscription makes 2 threads ~30x slower than 1 for these small batched ops (measured: 16,000 vs
500 images/s); the standard pipeline's workers always use 1 thread each. `--model-ips` is the training throughput
of the model the loader has to feed (default 90 images/s: vit_6_4_32 on 2 CPU cores); the loader should beat it
by 3x so data loading is not the bottleneck. Pass your own model's measured images/s to compare.
"""
import argparse, pickle, shutil, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from qvit_nb.loaders import TensorLoader, build_loaders  # noqa: E402


def cifar_like(root, n_train=5000, n_test=1000, seed=0):
    "Random CIFAR-10 in torchvision's layout under `root` (the fallback when the shared data is absent)."
    rng, d = np.random.default_rng(seed), Path(root) / 'cifar-10-batches-py'
    d.mkdir(parents=True, exist_ok=True)
    def dump(name, n):
        obj = {'data': rng.integers(0, 256, (n, 3072), dtype=np.uint8), 'labels': rng.integers(0, 10, n).tolist()}
        (d / name).write_bytes(pickle.dumps(obj, protocol=2))
    for i in range(1, 6): dump(f'data_batch_{i}', n_train // 5)
    dump('test_batch', n_test)
    (d / 'batches.meta').write_bytes(pickle.dumps({'label_names': [f'c{i}' for i in range(10)]}))
    return Path(root)


def images_per_s(loader, batches):
    it = iter(loader)
    next(it)                                     # warm-up: worker start-up, first-touch costs
    n, t = 0, time.perf_counter()
    for _, (x, y) in zip(range(batches), it):
        n += len(y)
    return n / (time.perf_counter() - t)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data-dir', default=str(REPO.parent / 'shared' / 'data' / 'cifar10'))
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--batches', type=int, default=40, help='timed batches per row')
    p.add_argument('--workers', type=int, default=2, help='DataLoader workers for the standard pipeline')
    p.add_argument('--max-images', type=int, default=None, help='subset of the train split (default: all)')
    p.add_argument('--device', default='cpu', help='device the tensor path keeps the dataset on')
    p.add_argument('--reprob', type=float, default=0.25)
    p.add_argument('--threads', type=int, default=1, help='torch threads of the main process (tensor path)')
    p.add_argument('--model-ips', type=float, default=90.,
                   help="model training images/s to compare with (default 90: vit_6_4_32 on 2 CPU cores)")
    a = p.parse_args(argv)

    torch.set_num_threads(a.threads)
    data_dir = Path(a.data_dir)
    if (data_dir / 'train.tar').exists() or (data_dir / 'train').exists():
        dataset, source = 'folder', f'{data_dir} (class-folder tars, JPEG)'
    else:
        print(f'{data_dir} not found: falling back to a CIFAR-like random dataset (no JPEG decoding)')
        data_dir = cifar_like(tempfile.mkdtemp(prefix='qvit_bench_'))
        __import__('atexit').register(shutil.rmtree, data_dir, True)
        dataset, source = 'cifar10', f'{data_dir} (random CIFAR-like pickles)'
    print(f'data: {source}; batch {a.batch_size}; {a.batches} timed batches; torch threads {torch.get_num_threads()}')

    common = dict(dataset=dataset, data_dir=data_dir, batch_size=a.batch_size, reprob=a.reprob, seed=0,
                  max_images=a.max_images, device=a.device)
    t = time.perf_counter()
    tensor_noaa, _, info = build_loaders(pipeline='tensor', workers=a.workers, aa=None, **common)
    decode_s = time.perf_counter() - t
    tensor_aa = TensorLoader(tensor_noaa.images, tensor_noaa.targets, a.batch_size, True, mean=info['mean'],
                             std=info['std'], aa='rand-m9-mstd0.5-inc1', reprob=a.reprob, device=a.device)
    timm_loader = lambda aa: build_loaders(pipeline='torch', workers=a.workers, aa=aa, **common)[0]
    rows = [
        (f'timm standard, {a.workers} workers', 'none', timm_loader(None)),
        ('tensor path', 'none', tensor_noaa),
        (f'timm standard, {a.workers} workers', 'rand-m9', timm_loader('rand-m9-mstd0.5-inc1')),
        ('tensor path', 'rand-m9', tensor_aa),
    ]
    print(f'tensor path set-up (load + decode {len(tensor_noaa.images)} images into one uint8 tensor): '
          f'{decode_s:.1f} s')
    print(f"\n| pipeline | aa | images/s | x model ({a.model_ips:g} img/s) | >= 3x |\n|---|---|---|---|---|")
    for name, aa, loader in rows:
        ips = images_per_s(loader, a.batches)
        print(f'| {name} | {aa} | {ips:,.0f} | {ips / a.model_ips:.1f} | {"yes" if ips >= 3 * a.model_ips else "no"} |',
              flush=True)
        del loader


if __name__ == '__main__':
    main()
