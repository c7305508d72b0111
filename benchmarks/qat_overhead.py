"""QAT overhead: train-step (and inference) time of a quantized ViT against the same float32 model, side by side.

Variants are timed interleaved (A B C A B C ...) in one process, medians over `--steps` steps after warm-up, so
machine noise hits all of them alike. Prints: variant, ms/step, images/s, ratio vs float32.

    python benchmarks/qat_overhead.py                       # vit_6_4_32, batch 128, W2A2 on every block linear
    python benchmarks/qat_overhead.py --per-channel --attn  # per-channel weights + attention quantization
    python benchmarks/qat_overhead.py --brevitas            # also Brevitas QuantLinear (installed on demand, see below)
    python benchmarks/qat_overhead.py --inference           # eval-mode forward passes under no_grad
    python benchmarks/qat_overhead.py --compile             # torch.compile every variant (float32 too)
    python benchmarks/qat_overhead.py --bf16-row            # add float32 under CPU bf16 autocast, for context

"qvit-nb LSQ" is the default path, every machine-dependent fast path as set (`'auto'` unless `QVIT_INT8_MATMUL` or
`QVIT_FUSED_KERNELS` say otherwise; `qvit_nb.fastpaths.fast_paths`):
the forward product of each quantized linear runs on the int8 levels where a one-time measurement at that shape
showed int8 faster than float32 here: in eval without gradients (`--inference`) oneDNN's int8 linear with a
packed weight (`int8_linear`), in training `torch._int_mm` on the weight's unpacked levels (`int_mm_linear`: no
packing per step). The row "qvit-nb LSQ, fp32 products" is a twin of that model with int8 switched off
(`fast_paths(int8=False)`). The folded linear's element-wise passes, and quantizers that do not fold into a
linear (attention's q/k/v/softmax, per-channel activations), run as fused compiled kernels per large tensor where
measured faster (compiled once per process, during the warm-up steps); the row "qvit-nb LSQ, unfused quantizers"
(`--attn`) is the same model with them off (`fused=False`).

The run prints the machine first (CPU model and the vector/int8 flags, ATen's CPU capability, the vector ISA
inductor compiles for, the oneDNN implementation chosen for an int8 product: `ref_int8` is its slow reference
kernel) and, after the table, every fast-path measurement taken and which implementation each row used.

Brevitas: when `import brevitas` fails, the script installs it with pip into its own directory,
benchmarks/.brevitas (`pip install --target ... --no-deps brevitas dependencies==2.0.1 unfoldNd`, so it reuses
this environment's torch and never changes the environment itself), adds that directory to `sys.path` and says so;
if the install fails (no network) it says so and leaves Brevitas out. The header line records the machine load
(`os.getloadavg`) before and after: other processes on the same cores inflate every variant alike, but noisy
medians still mean "measure again".

Page faults: the table's last column is the median count of minor page faults per step of each variant
(`getrusage`). Timing several models in one process has an artifact a training process does not: glibc's malloc
returns the top of its heap to the system when a step frees it, so one model's step can fault in fresh pages that
another model's step released, and the element-wise ops that first touch them look slower. Measured on the AMD
EPYC: the W2A2 model interleaved with its float32 twin took 19-37k faults per step (the float32 model none), while
each trained alone in its own process took 0-6k. `--keep-freed-memory` sets glibc's malloc to keep freed memory
(`mallopt`: no mmap, no trimming) before any model is built, so every variant runs on reused pages as a single
training process does in its steady state; use it where a quantized row shows faults the float32 row does not.
"""
import argparse, copy, ctypes, importlib.util, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import qvit_nb  # noqa: F401  (registers the models)
import timm
from qvit_nb.lsq import lsq_reference
from qvit_nb.quant import QConfig, register_quantizer, LSQQuantizer
from qvit_nb.fastpaths import (cpu_info, fast_paths, fast_path_measurements, fast_path_settings, int8_matmul_supported,
                               int8_linear, pack_int8_weight, _vec_width)
from qvit_nb.qmodules import quantize_model


class NaiveLSQ(LSQQuantizer):
    "The same quantizer with the naive autograd formulation (`lsq_reference`): what our fused Function replaces."
    def forward(self, x):                      # a forward of its own: `LSQQuantizer.linear` does not fold it either
        x, step, g = self.prepare(x)
        return lsq_reference(x, step, self.qn, self.qp, g, self.levels.binary)


@register_quantizer('naive_lsq')
def _naive(cfg, signed, num_channels, ch_axis):
    return NaiveLSQ(cfg.bits, signed=signed, symmetric=cfg.symmetric, per_channel=cfg.per_channel, ch_axis=ch_axis,
                    num_channels=num_channels if cfg.per_channel else None)


def brevitas_model(base, bits, per_channel=False):
    "Swap every block linear for Brevitas' QuantLinear with `bits`-bit weights and input activations."
    from brevitas.nn import QuantLinear, QuantIdentity
    m = copy.deepcopy(base)
    for name, mod in list(m.named_modules()):
        if isinstance(mod, nn.Linear) and name.startswith('blocks.'):
            q = QuantLinear(mod.in_features, mod.out_features, bias=mod.bias is not None, weight_bit_width=bits,
                            weight_scaling_per_output_channel=per_channel)
            q.load_state_dict(mod.state_dict(), strict=False)
            seq = nn.Sequential(QuantIdentity(bit_width=bits, return_quant_tensor=False), q)
            parent, _, child = name.rpartition('.')
            setattr(m.get_submodule(parent), child, seq)
    return m


BREVITAS_DIR = Path(__file__).resolve().parent / '.brevitas'
BREVITAS_PKGS = ['brevitas', 'dependencies==2.0.1', 'unfoldNd']


def ensure_brevitas():
    """Import brevitas, installing it into benchmarks/.brevitas (this env's torch reused) when absent; False if
    impossible."""
    if BREVITAS_DIR.is_dir() and str(BREVITAS_DIR) not in sys.path: sys.path.append(str(BREVITAS_DIR))
    try:
        import brevitas.nn  # noqa: F401
        return True
    except ImportError: pass
    print(f'brevitas is not installed: installing {" ".join(BREVITAS_PKGS)} into {BREVITAS_DIR} ...', flush=True)
    r = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target', str(BREVITAS_DIR),
                        *BREVITAS_PKGS], capture_output=True, text=True)
    if r.returncode:
        print(f'could not install brevitas, leaving it out:\n{r.stderr[-500:]}'); return False
    if str(BREVITAS_DIR) not in sys.path: sys.path.append(str(BREVITAS_DIR))
    importlib.invalidate_caches()
    try:
        import brevitas.nn  # noqa: F401
    except ImportError as e:
        print(f'brevitas installed but does not import ({e}), leaving it out'); return False
    return True


def cpu_description() -> str:
    "The CPU model and the flags that decide which kernels are fast: vector width and int8 dot products."
    model, flags = cpu_info()
    wanted = ['avx2', 'fma', 'avx512f', 'avx512bw', 'avx512_vnni', 'avx_vnni', 'avx512_bf16', 'amx_tile', 'amx_int8',
              'amx_bf16', 'asimd', 'sve']
    have = ' '.join(f for f in wanted if f in flags) or 'none of the vector/int8 ones'
    return f"{model}; {os.cpu_count()} logical CPUs; flags: {have}"


def onednn_impls(fn) -> str:
    """The implementations oneDNN reports (its verbose log) for the primitives `fn` executes, e.g.
    `brg:avx512_core_amx_int8`."""
    sys.stdout.flush()
    with tempfile.TemporaryFile() as f:
        saved = os.dup(1); os.dup2(f.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON): fn()
        finally:
            sys.stdout.flush(); os.dup2(saved, 1); os.close(saved)
        f.seek(0); lines = f.read().decode(errors='replace').splitlines()
    found = []
    for line in lines:
        parts = line.split(',')
        if 'exec' in parts and len(parts) > parts.index('exec') + 3:
            i = parts.index('exec'); found.append(f"{parts[i + 2]}: {parts[i + 3]}")
    return '; '.join(dict.fromkeys(found)) or 'not reported'


def int8_impl() -> str:
    "oneDNN's implementation for a tiny int8 product (cheap even where it is the slow reference kernel)."
    if not int8_matmul_supported(): return 'not built in'
    q, w = torch.randint(-1, 2, (16, 64)).float(), torch.randint(-1, 2, (64, 64)).float()
    packed = pack_int8_weight(w, torch.tensor(1.0), (16, 64))
    return onednn_impls(lambda: int8_linear(q, 1.0, packed))


def keep_freed_memory() -> str:
    "Make glibc's malloc keep freed memory in this process (no mmap, no trimming); says what it did."
    try: libc = ctypes.CDLL('libc.so.6')
    except OSError as e: return f"not glibc ({e}): allocator unchanged"
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(2 ** 31 - 1)) == 1
    if not ok: return "mallopt refused: allocator unchanged"
    return "glibc malloc keeps freed memory (mallopt: no mmap, no trim)"


def minor_faults() -> int:
    "This process's minor page faults so far (0 where `resource` is missing: Windows)."
    try: import resource
    except ImportError: return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='vit_6_4_32')
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--bits', type=int, default=2)
    p.add_argument('--per-channel', action='store_true')
    p.add_argument('--attn', action='store_true', help='also quantize q, k, v and softmax')
    p.add_argument('--no-naive', action='store_true')
    p.add_argument('--brevitas', action='store_true')
    p.add_argument('--inference', action='store_true', help='time eval-mode forward passes instead of train steps')
    p.add_argument('--compile', action='store_true', help='torch.compile every variant (compile time excluded)')
    p.add_argument('--bf16-row', action='store_true',
                   help='also time float32 under CPU bf16 autocast (not a QAT variant)')
    p.add_argument('--keep-freed-memory', action='store_true',
                   help="glibc malloc keeps freed memory, so no variant faults in pages another one released "
                        "(see above)")
    a = p.parse_args()
    allocator = keep_freed_memory() if a.keep_freed_memory else 'default allocator'
    torch.set_num_threads(a.threads)
    load0 = os.getloadavg()[0]
    torch.manual_seed(0)
    base = timm.create_model(a.model, num_classes=10, drop_path_rate=0.0)
    x = torch.randn(a.batch, 3, 32, 32)
    y = torch.randint(0, 10, (a.batch,))

    def quantized(mode):
        m = quantize_model(copy.deepcopy(base), wq=QConfig(mode=mode, bits=a.bits, per_channel=a.per_channel),
                           aq=QConfig(mode=mode, bits=a.bits), qmodules='attn' if a.attn else 'linear')
        with torch.no_grad(): m(x[:8])
        return m

    print(f"CPU: {cpu_description()}")
    print(f"torch {torch.__version__}, ATen CPU capability {torch.backends.cpu.get_cpu_capability()}, inductor vector "
          f"width {_vec_width() or 'none'} bits; oneDNN int8 product: {int8_impl()}; fast paths {fast_path_settings()}",
          flush=True)
    variants = {'float32': copy.deepcopy(base), 'qvit-nb LSQ': quantized('lsq')}
    variants['qvit-nb LSQ, fp32 products'] = quantized('lsq')           # a twin of the same model, int8 products off
    if a.attn: variants['qvit-nb LSQ, unfused quantizers'] = variants['qvit-nb LSQ']   # same model, fused kernels off
    if a.bf16_row: variants['float32, bf16 autocast'] = variants['float32']
    if not a.no_naive: variants['naive autograd LSQ'] = quantized('naive_lsq')
    if a.brevitas and ensure_brevitas(): variants['brevitas QuantLinear'] = brevitas_model(base, a.bits, a.per_channel)

    def make_step(m, int8_products=None, fused=None, bf16=False):
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
        def run():
            if a.inference:
                with torch.no_grad(): m(x)
            else:
                loss = F.cross_entropy(m(x), y)
                opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        def step():
            with fast_paths(int8=int8_products, fused=fused), torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
                run()
        m.train(not a.inference)
        return step

    if a.compile:
        for k, m in variants.items(): variants[k] = torch.compile(m)
    steps = {k: make_step(m, int8_products=False if k == 'qvit-nb LSQ, fp32 products' else None,     # None: as set
                          fused=False if k == 'qvit-nb LSQ, unfused quantizers' else None,
                          bf16=k == 'float32, bf16 autocast')
             for k, m in variants.items()}
    times, faults = {k: [] for k in steps}, {k: [] for k in steps}
    for i in range(a.warmup + a.steps):
        for k, f in steps.items():
            f0, t0 = minor_faults(), time.perf_counter(); f(); dt = time.perf_counter() - t0
            if i >= a.warmup: times[k].append(dt); faults[k].append(minor_faults() - f0)
    ref = statistics.median(times['float32'])
    what = 'inference' if a.inference else 'train step'
    print(f"{a.model}, batch {a.batch}, {a.threads} threads, W{a.bits}A{a.bits} on "
          f"{'linear + attn' if a.attn else 'linear'}{', per-channel weights' if a.per_channel else ''}; {what}, "
          f"median of {a.steps} after {a.warmup} warm-up, interleaved{', torch.compile' if a.compile else ', eager'}; "
          f"load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after; {allocator}")
    print(f"{'variant':<30}{'ms/step':>10}{'images/s':>10}{'vs float32':>12}{'faults/step':>13}")
    for k, ts in times.items():
        med = statistics.median(ts)
        print(f"{k:<30}{med * 1e3:>10.1f}{a.batch / med:>10.1f}{med / ref:>11.3f}x"
              f"{statistics.median(faults[k]):>13.0f}")
    measured = fast_path_measurements()
    print("fast-path measurements (once per process and size class; 'on' = at least 10% faster than what it replaces):")
    for key, m in measured.items():
        print(f"  {' '.join(map(str, key)):<34} {'on ' if m.wins else 'off'}  {m.fast_s * 1e3:9.3f} ms vs "
              f"{m.ref_s * 1e3:9.3f} ms at {m.shape}")
    if not measured: print("  none taken")
    on = {k[0] for k, m in measured.items() if m.wins}
    products = [name for key, name in (('int8', 'packed int8 products (oneDNN)'),
                                       ('int8 + pack', 'packed int8 products (oneDNN)'),
                                       ('int_mm', 'int8 products on unpacked levels (torch._int_mm)')) if key in on]
    folded = ('; fused folded-linear passes (inductor C++)' if 'fused fold' in on else
              '; folded-linear passes as ATen ops')
    quantizers = ('; fused quantizer kernels (inductor C++)' if 'fused' in on else
                  '; eager quantizer ops' if a.attn or a.per_channel else '')
    print("implementations: float32: ATen addmm (BLAS); qvit-nb LSQ: "
          f"{', '.join(dict.fromkeys(products)) + ' where measured faster, else ' if products else ''}"
          f"float32 products (folded step, ATen addmm){folded}{quantizers}")


if __name__ == '__main__':
    main()
