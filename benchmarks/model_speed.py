"""Parameter counts and CPU forward/backward time of the compact transformers at batch 32.

Usage: python benchmarks/model_speed.py [--models vit_6_4_32 cct_7_3x1_32] [--batch 32] [--repeats 10] [--threads 2]
Prints one line per model: parameters (trainable/frozen), median forward and forward+backward time over `repeats`
runs after one warm-up. The CPU may be shared with other processes: numbers are indicative.
"""
import argparse, statistics, time

import timm
import torch
import torch.nn.functional as F

import qvit_nb  # noqa: F401  registers the models


def measure(name: str, batch: int, repeats: int) -> dict:
    model = timm.create_model(name, num_classes=10).train()
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    fwd, fwd_bwd = [], []
    for i in range(repeats + 1):                       # first iteration is a warm-up
        t0 = time.perf_counter()
        with torch.no_grad(): model(x)
        t1 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        t2 = time.perf_counter()
        if i: fwd.append(t1 - t0); fwd_bwd.append(t2 - t1)
    n = sum(p.numel() for p in model.parameters())
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return dict(model=name, params=n, frozen=frozen, fwd_ms=1e3 * statistics.median(fwd),
                fwd_bwd_ms=1e3 * statistics.median(fwd_bwd))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--models', nargs='+', default=['vit_6_4_32', 'cct_7_3x1_32'])
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--repeats', type=int, default=10)
    p.add_argument('--threads', type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, timm {timm.__version__}, {args.threads} threads, batch {args.batch}, "
          f"median of {args.repeats}")
    for name in args.models:
        r = measure(name, args.batch, args.repeats)
        print(f"{r['model']:>16}: {r['params']:>9,} params ({r['frozen']:,} frozen)  "
              f"forward {r['fwd_ms']:7.1f} ms  forward+backward {r['fwd_bwd_ms']:7.1f} ms")


if __name__ == '__main__':
    main()
