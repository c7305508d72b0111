"""Export parity on real data: train a run for one epoch on the shared CIFAR-10 images, export it to ONNX
(`qvit_nb.export`), and compare ONNX Runtime (graph optimisations on and off) with the PyTorch model on the whole
CIFAR-10 test split. Prints one row per run and runtime setting: top-1 of both, prediction agreement, the share of
images whose logits match to float rounding, the largest logit difference, and the model's storage.

    python benchmarks/export_parity.py                                  # W2A2 linear+attention, per-channel W2
    python benchmarks/export_parity.py --data /path/to/cifar10 --model vit_6_4_32 --train-images 50000

`--data` is a folder with train.tar/test.tar (or train/test class folders) of 32x32 CIFAR-10 images; the default
is the shared copy beside the repository (`../shared/data/cifar10`). `--train-images` subsets the training split
(default: all 50,000; the epoch is one pass over it); the test split is always used whole. One epoch, so no
auto-augment, mixup, cutmix or erasing, lr 2e-3.
"""
import argparse, contextlib, io, tempfile, time
from pathlib import Path

import torch

from qvit_nb.train import train
from qvit_nb.export import export_run, onnx_parity
from qvit_nb.rundata import load_run_model, run_eval_data

RUNS = {'W2A2 linear+attn': dict(wq_enable=True, wq_bitw=2, aq_enable=True, aq_bitw=2, attn_q=True),
        'W2 per-channel': dict(wq_enable=True, wq_bitw=2, wq_per_channel=True)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', default=str(Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'cifar10'))
    p.add_argument('--model', default='vit_2_4_32')
    p.add_argument('--epochs', type=int, default=1)
    p.add_argument('--train-images', type=int, default=50_000)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--output', default=None, help='where the runs go (default: a temporary folder)')
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.output or tempfile.mkdtemp(prefix='qvit_export_parity_'))
    print(f"{a.model}, {a.epochs} epoch(s) on {a.train_images} CIFAR-10 training images from {a.data}; runs in {out}")
    rows = []
    for name, over in RUNS.items():
        exp = name.replace(' ', '_').replace('+', '_')
        t0 = time.time()
        with contextlib.redirect_stdout(io.StringIO()):
            # one epoch: no heavy regularisation
            m = train(output=str(out), experiment=exp, dataset='folder', data_dir=a.data, model=a.model,
                      epochs=a.epochs, warmup_epochs=0, cooldown_epochs=0, batch_size=128, lr=2e-3, workers=0,
                      max_images=a.train_images, aa=None, mixup=0., cutmix=0., reprob=0., **over)
        t1 = time.time()
        path, size = export_run(out / exp)
        t2 = time.time()
        par = onnx_parity(load_run_model(out / exp), path, run_eval_data(out / exp, max_images=10**9, batch_size=250))
        print(f"\n{name}: trained {t1 - t0:.0f} s (best top-1 {m['best_top1']:.2f}), exported {t2 - t1:.0f} s, parity "
              f"{time.time() - t2:.0f} s; storage {size['bytes'] / 2**10:,.0f} KiB vs "
              f"{size['float32_bytes'] / 2**10:,.0f} KiB float32 ({size['ratio']:.1f}x)")
        print(par.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
        rows.append(par.ok.all())
    print(f"\nparity holds for {sum(rows)} of {len(rows)} runs")


if __name__ == '__main__':
    main()
