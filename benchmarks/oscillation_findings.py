"""The oscillation sweep's findings as Markdown tables, from its runs folder (docs/oscillation.md quotes the output).

    python benchmarks/oscillation_findings.py runs/oscillation_cifar10_cpu

Prints, per method (experiments grouped by name without their `_sN` seed suffix): the runs, top-1 (best and last,
mean ± sd over seeds), and the final share of oscillating weights (the last epoch's `oscillating` of `summary.csv`:
weights that crossed a threshold and came back at least once in that epoch) with its change against plain LSQ at the
same precision; then the per-epoch share of the W2 LSQ run beside its top-1, for the question whether oscillation
explains the slow early epochs of 2-bit weights.
"""
import re, statistics, sys
from pathlib import Path

import pandas as pd

from qvit_nb.rundata import load_runs, read_summary


def markdown(df: pd.DataFrame) -> str:
    "A Markdown table (without the optional tabulate package)."
    cols = [str(c) for c in df.columns]
    lines = ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    return '\n'.join(lines + ['| ' + ' | '.join(str(v) for v in r) + ' |' for r in df.itertuples(index=False)])


def _fmt(values, pct=False):
    values = [v for v in values if v == v]
    if not values: return ''
    scale, unit = (100, '%') if pct else (1, '')
    mean = statistics.mean(values) * scale
    if len(values) == 1: return f"{mean:.2f}{unit}"
    return f"{mean:.2f}{unit} ± {statistics.stdev(values) * scale:.2f} (n={len(values)})"


def main(runs_dir):
    runs = load_runs(runs_dir)
    runs = runs[runs.status == 'finished'].copy()
    if runs.empty: sys.exit(f"no finished runs under {runs_dir}")
    runs['experiment'] = runs.output_dir.map(lambda d: Path(d).name.split('-', 3)[-1])
    runs['method'] = runs.experiment.map(lambda e: re.sub(r'_s\d+$', '', e))
    rows, base = [], {}
    for method, g in runs.groupby('method', sort=False):
        finals = [read_summary(d).oscillating.iloc[-1] for d in g.output_dir]
        rows.append(dict(method=method, runs=len(g), best=_fmt(g.best_top1.tolist()), last=_fmt(g.final_top1.tolist()),
                         oscillating=_fmt(finals, pct=True), share=statistics.mean(finals)))
        if method in ('w2_lsq', 'w2a2_lsq'): base[method.split('_')[0]] = statistics.mean(finals)
    for r in rows:
        ref = base.get(r['method'].split('_')[0])
        r['vs LSQ'] = '' if not ref or r['method'].endswith('_lsq') else f"{r['share'] / ref:.2f}x"
    table = pd.DataFrame(rows).drop(columns='share')
    print(f"## Per method ({len(runs)} finished runs in {runs_dir})\n")
    print(markdown(table))
    lsq = runs[runs.method == 'w2_lsq'].output_dir.tolist()
    if lsq:
        s = read_summary(lsq[0])
        print("\n## W2 LSQ per epoch (seed 0)\n")
        print(markdown(pd.DataFrame({'epoch': s.epoch + 1, 'top1': s.top1.round(2),
                                     'oscillating %': (s.oscillating * 100).round(2),
                                     'osc_rate (per weight and step)': s.osc_rate.map(lambda v: f"{v:.2e}")})))


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else 'runs/oscillation_cifar10_cpu')
