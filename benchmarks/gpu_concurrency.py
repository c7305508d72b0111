"""Sharing one GPU: images/s of 1, 2 and 4 concurrent vit_6_4_32 W2A2 training runs, one process each.

    python benchmarks/gpu_concurrency.py                       # 1, 2 and 4 processes, 30 s timed each
    python benchmarks/gpu_concurrency.py --procs 1 2 --seconds 20 --compile

Each process builds vit_6_4_32 with 2-bit per-tensor LSQ on the weights and inputs of every block linear (the
study's W2A2), and trains it with the engine's GPU settings (bf16 autocast, fused AdamW) on synthetic
CIFAR-sized batches (batch 128, 32x32, already on the GPU), so the numbers measure how the GPU is shared, not an
input pipeline. All processes of one level warm up (`--warmup` steps; compiling with `--compile`), wait at a
barrier, then train for `--seconds` of wall time together; each reports its steps, and the table gives the
total and per-process images/s, the total against one process, and each process's peak GPU memory.
Prints one table; `--json PATH` also writes the rows.
"""
import argparse, json, subprocess, sys, tempfile, time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def worker(a):
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, str(REPO))
    import qvit_nb  # noqa: F401  (registers the models)
    import timm
    from qvit_nb.quant import QConfig
    from qvit_nb.qmodules import quantize_model
    torch.manual_seed(a.rank)
    dev = torch.device(a.device)
    m = quantize_model(timm.create_model('vit_6_4_32', num_classes=10), wq=QConfig(bits=2), aq=QConfig(bits=2),
                       qmodules='linear').to(dev)
    x, y = torch.randn(a.batch, 3, 32, 32, device=dev), torch.randint(0, 10, (a.batch,), device=dev)
    with torch.no_grad(): m(x[:8])                                   # initialise the steps
    step_model = torch.compile(m) if a.compile else m
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, fused=dev.type == 'cuda')

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16): loss = F.cross_entropy(step_model(x), y)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()

    for _ in range(a.warmup): step()
    sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
    sync()
    Path(a.barrier, f'ready{a.rank}').touch()
    while not Path(a.barrier, 'go').exists(): time.sleep(0.01)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < a.seconds:
        step(); n += 1
        if n % 10 == 0: sync()
    sync()
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == 'cuda' else 0.0
    print(json.dumps(dict(rank=a.rank, steps=n, seconds=dt, images_per_s=n * a.batch / dt, peak_mem_gb=peak)),
          flush=True)


def run_level(a, procs: int) -> dict:
    "Start `procs` workers, release them together after their warm-up, and collect their reports."
    with tempfile.TemporaryDirectory() as barrier:
        args = [sys.executable, __file__, '--worker', '--barrier', barrier, '--seconds', str(a.seconds),
                '--warmup', str(a.warmup), '--batch', str(a.batch), '--device', a.device,
                *(['--compile'] if a.compile else [])]
        ps = [subprocess.Popen(args + ['--rank', str(r)], stdout=subprocess.PIPE, text=True) for r in range(procs)]
        deadline = time.time() + a.setup_timeout
        while sum(Path(barrier, f'ready{r}').exists() for r in range(procs)) < procs:
            if time.time() > deadline or any(p.poll() not in (None, 0) for p in ps):
                for p in ps: p.kill()
                raise RuntimeError(f'{procs} workers did not all get ready within {a.setup_timeout} s')
            time.sleep(0.05)
        Path(barrier, 'go').touch()
        reports = []
        for p in ps:
            out, _ = p.communicate(timeout=a.seconds * 10 + 60)
            if p.returncode: raise RuntimeError(f'a worker failed (exit {p.returncode})')
            reports.append(json.loads(out.strip().splitlines()[-1]))
    total = sum(r['images_per_s'] for r in reports)
    return dict(processes=procs, total_images_per_s=round(total, 1), per_process_images_per_s=round(total / procs, 1),
                peak_mem_gb_per_process=round(max(r['peak_mem_gb'] for r in reports), 2))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--procs', type=int, nargs='+', default=[1, 2, 4])
    p.add_argument('--seconds', type=float, default=30.0, help='timed wall time per level')
    p.add_argument('--warmup', type=int, default=30, help='untimed steps per process before the barrier')
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--compile', action='store_true')
    p.add_argument('--setup-timeout', type=float, default=300.0)
    p.add_argument('--json', default=None)
    p.add_argument('--device', default='cuda', help='cuda; cpu only to smoke-test the script')
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--rank', type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument('--barrier', default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker: return worker(a)
    if any(n < 1 for n in a.procs): p.error(f'--procs must be positive integers, got {a.procs}')
    import torch
    if a.device == 'cuda' and not torch.cuda.is_available():
        sys.exit('gpu_concurrency.py needs a CUDA GPU; none is visible here')
    print(f"GPU: {torch.cuda.get_device_name() if a.device == 'cuda' else a.device}; torch {torch.__version__}; "
          f"vit_6_4_32 W2A2, batch {a.batch}, bf16 autocast, {'compiled' if a.compile else 'eager'}; "
          f"{a.seconds:g} s timed per level", flush=True)
    rows = []
    for n in a.procs:
        rows.append(run_level(a, n))
        ratio = rows[-1]['total_images_per_s'] / rows[0]['total_images_per_s']
        rows[-1]['vs_1_process'] = round(ratio, 3) if a.procs[0] == 1 else None
        print(json.dumps(rows[-1]), flush=True)
    print(f"{'processes':>9} {'total img/s':>12} {'per process':>12} {'vs 1 proc':>10} {'peak GB/proc':>13}")
    for r in rows:
        vs = f"{r['vs_1_process']:.3f}x" if r['vs_1_process'] is not None else '-'
        print(f"{r['processes']:>9} {r['total_images_per_s']:>12.1f} {r['per_process_images_per_s']:>12.1f} {vs:>10} "
              f"{r['peak_mem_gb_per_process']:>13.2f}")
    if a.json: Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == '__main__':
    main()
