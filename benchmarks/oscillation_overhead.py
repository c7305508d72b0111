"""Oscillation tracking's cost: the train-step time of a W2 ViT with tracking (and each remedy) against the same model
without, side by side in one process.

Variants are timed interleaved (A B C ... A B C ...), medians over `--steps` steps after warm-up, so machine noise hits
all of them alike. A step is forward, loss, backward, AdamW step (and CGA's masking around it, where on). Prints the
machine load before and after, then variant, ms/step and the ratio to the untracked model of the same quantizer.

    python benchmarks/oscillation_overhead.py                        # vit_6_4_32, batch 64, W2 per channel
    python benchmarks/oscillation_overhead.py --model vit_2_4_32 --batch 32 --steps 20   # a quick look
"""
import argparse, copy, os, statistics, time

import torch
import torch.nn.functional as F

import qvit_nb  # noqa: F401  (registers the models)
import timm
from qvit_nb.oscillation import CGA, track_oscillation, trackers
from qvit_nb.qmodules import quantize_model
from qvit_nb.quant import QConfig
import qvit_nb.statsq  # noqa: F401  (registers mode statsq)


def variant(base, mode, track=None):
    "A copy of the float model, W2 per channel with quantizer `mode`; `track`: None, 'track', 'freeze+dampen', 'cga'."
    m = quantize_model(copy.deepcopy(base), wq=QConfig(mode=mode, bits=2, per_channel=True), aq=None,
                       qmodules=['linear'])
    cga = None
    if track:
        track_oscillation(m, 0.01, freeze=track == 'freeze+dampen', dampen=track == 'freeze+dampen')
        for t in trackers(m).values(): t.freeze_threshold = 0.02 if track == 'freeze+dampen' else 0.0
        if track == 'cga': cga = CGA(m, 0.005)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    return m, opt, cga


def step(m, opt, cga, x, y):
    out = m(x)
    loss = F.cross_entropy(out, y)
    ts = trackers(m).values()
    damp = [t.damp_loss for t in ts if t.damp_loss is not None]
    if damp: loss = loss + 0.01 * sum(damp)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cga: cga.before_step()
    opt.step()
    if cga: cga.after_step()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--model', default='vit_6_4_32'); ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--steps', type=int, default=30); ap.add_argument('--warmup', type=int, default=3)
    a = ap.parse_args()
    torch.manual_seed(0)
    base = timm.create_model(a.model, num_classes=10)
    x, y = torch.randn(a.batch, 3, 32, 32), torch.randint(0, 10, (a.batch,))
    names = [('lsq', None), ('lsq', 'track'), ('lsq', 'freeze+dampen'), ('lsq', 'cga'),
             ('statsq', None), ('statsq', 'track'), ('statsq', 'cga')]
    vs = {n: variant(base, *n) for n in names}
    times = {n: [] for n in names}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {a.model}, batch {a.batch}, "
          f"load before {os.getloadavg()[0]:.2f}")
    for i in range(a.warmup + a.steps):
        for n in names:
            t0 = time.perf_counter(); step(*vs[n], x, y); dt = time.perf_counter() - t0
            if i >= a.warmup: times[n].append(dt)
    print(f"load after {os.getloadavg()[0]:.2f}\n")
    print(f"{'variant':28s} {'ms/step':>9s} {'vs untracked':>13s}")
    for mode, tr in names:
        med = statistics.median(times[(mode, tr)]) * 1e3
        ref = statistics.median(times[(mode, None)]) * 1e3
        print(f"{mode + (' + ' + tr if tr else ''):28s} {med:9.1f} {med / ref:13.3f}")


if __name__ == '__main__':
    main()
