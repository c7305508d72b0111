"""Epoch time of vit_6_4_32 on CIFAR-10, float vs W2A2 QAT, through the training engine (the numbers a GPU user gets).

    python benchmarks/gpu_epoch.py DATA [--epochs 3] [--compile both|on|off] [--budget-s 420] [--out results.json]

DATA is CIFAR-10 as class folders (`DATA/train/<class>/*.jpg`, `DATA/test/<class>/*.jpg`, or `train.tar`/`test.tar`,
e.g. ../shared/data/cifar10). Every variant is one `qvit_nb.train.train` run of the study's recipe
(configs/fp/vit_6_4_32_cifar10.yml: AdamW, RandAugment, mixup/cutmix, random erasing, label smoothing) with the
engine's defaults for the device: on a GPU, bf16 autocast, the fused optimizer and the tensor-resident data path
(the whole epoch augmented on the device). "W2A2" quantizes the weights and inputs of the four linears of every
block with 2-bit per-tensor LSQ (learnable steps). Each run trains `--epochs` epochs (no cooldown); the first epoch
carries the warm-up (cuDNN/cuBLAS autotuning, and compilation under `--compile`), so the steady epoch time is the
median of the later ones. The ratio compares W2A2 with float in the same compile mode.

Before the runs the script checks the quantizer's numerics on the device (forward bit-exact against
`clamp(round(x/s))*s`, step and input gradients against the autograd reference), then the fused kernels and the
compiled-graph form (`lsq_composed` under `torch.compile`) against the eager function, float32 and bf16, and prints
the results. The checks are `qvit_nb.lsq`'s (`lsq_grads`, `relative_error`, `step_sum_error`), the ones its notebook
holds the CPU paths to. `--unfused-row` adds an eager W2A2 run with the fused quantizer kernels off
(`fast_paths(fused=False)`), side by side (they are CPU-only since this comparison on an H200: there they made the
eager epoch slower).
"""
import argparse, json, statistics, sys, tempfile, time
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from qvit_nb.lsq import (lsq_grads, lsq_quantize, lsq_reference, lsq_step_terms, lsq_terms,  # noqa: E402
                         relative_error, step_sum_error)
from qvit_nb.fastpaths import fast_paths, quantize  # noqa: E402
from qvit_nb.train import train  # noqa: E402

CONFIG = REPO / 'configs' / 'fp' / 'vit_6_4_32_cifar10.yml'
VARIANTS = {'float': {}, 'W2A2': dict(wq_enable=True, wq_bitw=2, aq_enable=True, aq_bitw=2, qmodules=['linear'])}
UNFUSED = ', unfused quantizers'     # a variant name's suffix: the same run with the fused kernels off (fast_paths)


def _grads(fn, x, s, gy, fused=True):
    "`fn(x, s)`'s output and the gradients of `x` and `s` for the output gradient `gy`, fused kernels forced on or off."
    with fast_paths(fused=fused): return lsq_grads(fn, x, s, gy)


def check_numerics(device) -> str:
    "The LSQ forward and gradients on `device` against the reference, with the criteria of `nbs/00a_lsq.ipynb`."
    g = torch.Generator(device='cpu').manual_seed(0)
    x = (torch.randn(256, 64, generator=g) * 2).to(device)
    s, gy = torch.tensor(0.37, device=device), torch.randn(256, 64, generator=g).to(device)
    ours, ref = [_grads(lambda a, b: fn(a, b, 2, 1, 0.05), x, s, gy) for fn in (lsq_quantize, lsq_reference)]
    exact = torch.equal(ours[0], (x / s).clamp(-2, 1).round() * s)
    rel = relative_error(ours[1], ref[1])
    eps = step_sum_error(ours[2], ref[2], lsq_step_terms(x, s, 2, 1, gy, 0.05))
    ok = exact and rel <= 1e-6 and eps <= 32
    return (f"numerics on {device}: forward bit-exact {exact}; against the autograd reference: input gradient relative "
            f"error {rel:.1e} (limit 1e-6), step gradient error {eps:.1f} float32 epsilons of its terms' magnitudes "
            f"(limit 32) -> {'OK' if ok else 'FAILED'}")


def check_kernels(device) -> list:
    """The fused kernels (eager, large tensors) and the compiled-graph form against the unfused eager function on
    `device`: forward and input gradient mismatches (0 expected); every path's step gradient against the exact
    (float64) sum of the same float terms (1e-6 relative expected in float32; in bf16 a compiled graph may keep x/s
    unrounded, a 2^-8 relative difference in its terms)."""
    g = torch.Generator(device='cpu').manual_seed(1)
    lines = []
    for dtype, per_channel in ((torch.float32, False), (torch.float32, True), (torch.bfloat16, False)):
        # above the fused kernels' 2^19-element floor
        x = (torch.randn(128 * 65, 256, generator=g) * 2).to(device, dtype)
        s = (torch.rand(1, 256, generator=g) * 0.3 + 0.2 if per_channel else torch.tensor(0.37)).to(device)
        gy = torch.randn(x.shape, generator=g).to(device, dtype)
        function = lambda a, b: quantize(a, b, 2, 1, 0.01, False)
        eager = _grads(function, x, s, gy, fused=False)
        d = lsq_terms(x / s.to(dtype), -2, 1)[2].double() * gy.double()   # these float terms, summed exactly
        exact = (d.sum() if s.dim() == 0 else d.sum(0, keepdim=True)) * 0.01
        rows = {'eager function': eager}
        if device.type == 'cpu':                                # the fused kernels are CPU-only (qvit_nb.fastpaths)
            rows['fused kernels'] = _grads(function, x, s, gy)
        rows['compiled graph (composed)'] = _grads(torch.compile(lambda a, b: lsq_quantize(a, b, 2, 1, 0.01)), x, s, gy)
        for name, (y, gx, gs) in rows.items():
            rel = relative_error(gs.double(), exact)
            limit = 1e-6 if dtype == torch.float32 else 4e-3         # bf16: one rounding of x/s (2^-8) may differ
            lines.append(f"{name} on {device}, {str(dtype)[6:]}{', per-channel' if per_channel else ''}: forward "
                         f"mismatches {(y != eager[0]).sum().item()} of {y.numel()}, input-gradient mismatches "
                         f"{(gx != eager[1]).sum().item()}, step gradient relative error {rel:.1e} "
                         f"({'within' if rel <= limit else 'ABOVE'} {limit:.0e})")
    return lines


def run_variant(label, compile_, data, epochs, out_dir, device, extra):
    name, fused = label.removesuffix(UNFUSED), not label.endswith(UNFUSED)
    tag = label.replace(', ', '_').replace(' ', '-')
    over = dict(dataset='folder', data_dir=str(data), epochs=epochs, cooldown_epochs=0, device=device, compile=compile_,
                output=str(out_dir), experiment=f"{tag}_{'compiled' if compile_ else 'eager'}", **VARIANTS[name],
                **extra)
    if device.startswith('cuda'): torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with fast_paths(fused='auto' if fused else False): m = train(str(CONFIG), **over)
    wall = time.perf_counter() - t0
    rows = pd.read_csv(Path(m['run_dir']) / 'summary.csv')
    secs = rows['train_seconds'].tolist()
    steady = statistics.median(secs[1:]) if len(secs) > 1 else secs[0]
    images_per_s = m['train_images_per_s'] if len(secs) == 1 else rows['train_images_per_s'].iloc[1:].median()
    return dict(variant=label, compile=compile_, epochs=len(secs), first_epoch_s=secs[0], steady_epoch_s=steady,
                images_per_s=images_per_s,
                top1=m['final_top1'], wall_s=round(wall, 1),
                peak_mem_gb=round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith('cuda') else None)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('data', help='CIFAR-10 class folders (train/ and test/, or train.tar and test.tar)')
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--compile', choices=('both', 'on', 'off'), default='both')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--workers', type=int, default=8, help='processes that decode the JPEGs once into memory')
    p.add_argument('--max-images', type=int, default=0, help='subset per split, for a quick try (0: all)')
    p.add_argument('--budget-s', type=float, default=420., help='skip the variants that would not finish in this time')
    p.add_argument('--out', default=None, help='also write the rows as JSON here')
    p.add_argument('--unfused-row', action='store_true',
                   help='also run W2A2 eager with the fused quantizer kernels off')
    a = p.parse_args(argv)
    t_start = time.perf_counter()
    dev = torch.device(a.device)
    name = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'CPU'
    print(f"device {name}, torch {torch.__version__}", flush=True)
    print(check_numerics(dev), flush=True)
    for line in check_kernels(dev): print(line, flush=True)
    modes = {'both': (False, True), 'on': (True,), 'off': (False,)}[a.compile]
    extra = dict(workers=a.workers, max_images=a.max_images)
    rows, last, compiled_before = [], 0., False
    with tempfile.TemporaryDirectory() as tmp:
        for compile_ in modes:
            for variant in [*VARIANTS, *([f'W2A2{UNFUSED}'] if a.unfused_row and not compile_ else [])]:
                left = a.budget_s - (time.perf_counter() - t_start)
                # first compiled run: + compile time
                need = 1.2 * last + (90. if compile_ and not compiled_before else 0.)
                if left < need:
                    print(f"skipped {variant} ({'compiled' if compile_ else 'eager'}): {left:.0f} s of the budget "
                          f"left, about {need:.0f} s needed", flush=True)
                    continue
                r = run_variant(variant, compile_, a.data, a.epochs, tmp, a.device, extra)
                last, compiled_before = r['wall_s'], compiled_before or compile_
                rows.append(r)
                print(json.dumps(r), flush=True)
                if a.out: Path(a.out).write_text(json.dumps(rows, indent=1))
    df = pd.DataFrame(rows)
    if df.empty: return 1
    base = df[df.variant == 'float'].set_index('compile')['steady_epoch_s']
    df['vs_float'] = [r.steady_epoch_s / base[r.compile] if r.compile in base else float('nan')
                      for r in df.itertuples()]
    print(f"\nvit_6_4_32, CIFAR-10 (50,000 train images{f', subset {a.max_images}' if a.max_images else ''}), "
          f"batch 128, {name}, torch {torch.__version__}; steady epoch = median of epochs 2..{a.epochs}")
    columns = ['variant', 'compile', 'first_epoch_s', 'steady_epoch_s', 'images_per_s', 'vs_float', 'top1',
               'peak_mem_gb']
    print(df[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == '__main__':
    sys.exit(main())
