"""Study fidelity (issue #15): the shipped study configs and sweeps use the study's semantics and name their study
rows, the CPU findings sweep covers every finding, and `qvit report --study` on fabricated runs."""
import contextlib, io, json
from pathlib import Path

import yaml

from qvit_nb.cli import main
from qvit_nb.config import load_config
from qvit_nb.results import STUDY_FINDINGS, study_results
from qvit_nb.sweeps import load_sweep

ROOT = Path(__file__).resolve().parents[1]
STUDY_SWEEPS = ('study_final.yml', 'multistep.yml')


def test_study_configs_use_the_study_semantics():
    for cfg in sorted((ROOT / 'configs' / 'quantized').glob('*.yml')):
        c = load_config(cfg)
        assert (c.kd_target, c.aq_relu_unsigned, c.aq_learnable_bias_per_channel) == ('study', 'study', True), cfg.name
    for name in STUDY_SWEEPS:
        sweep = load_sweep(ROOT / 'configs' / 'sweeps' / name)
        for e in sweep.experiments:
            c = sweep.config(e, 'runs', {'use_kd': True, 'teacher': 'vit_6_4_32'} if e.teacher_from else {})
            study = (c.kd_target, c.aq_relu_unsigned, c.aq_learnable_bias_per_channel)
            assert study == ('study', 'study', True), (name, e.name)


def test_study_sweeps_name_existing_study_rows():
    ids = set(study_results().run_id)
    for name in STUDY_SWEEPS:
        sweep = load_sweep(ROOT / 'configs' / 'sweeps' / name)
        rows = [e.overrides.get('study_row') for e in sweep.experiments]
        assert all(isinstance(r, str) and r in ids for r in rows), (name, rows)
    for name in ('findings_cifar10_cpu.yml', 'findings_cifar10_gpu.yml'):   # the teacher and the controls name no row
        sweep = load_sweep(ROOT / 'configs' / 'sweeps' / name)
        rows = {e.name: e.overrides.get('study_row') for e in sweep.experiments}
        assert all(isinstance(r, str) and r in ids for r in rows.values() if r is not None), (name, rows)
        assert {n for n, r in rows.items() if r is None} >= {'teacher'}, name
    final = load_sweep(ROOT / 'configs' / 'sweeps' / 'study_final.yml')
    assert {e.overrides['study_row'] for e in final.experiments} >= set(study_results('final').run_id)


def test_findings_sweep_covers_every_finding():
    sweep = load_sweep(ROOT / 'configs' / 'sweeps' / 'findings_cifar10_cpu.yml')
    rows = {e.overrides.get('study_row') for e in sweep.experiments}
    for claim, better, worse in STUDY_FINDINGS:
        assert rows & set(better) and rows & set(worse), claim
    c = sweep.config(next(e for e in sweep.experiments if e.name == 'fp'), 'runs')
    assert (c.dataset, c.data_dir, c.device) == ('folder', '/work/shared/data/cifar10', 'cpu')
    assert c.max_images and c.max_images <= 20000 and c.epochs <= 4 and c.model == 'vit_2_4_32'
    seeds = {}
    for e in sweep.experiments: seeds.setdefault(e.overrides.get('study_row'), set()).add(e.overrides.get('seed', 42))
    assert len(seeds['25997']) == len(seeds['25911']) == 3                     # the study's closest pair: 3 seeds each
    # float on top
    assert any(not e.overrides.get('wq_enable') and not e.overrides.get('aq_enable') for e in sweep.experiments)


def _fake_run(d: Path, name: str, acc: float, **args):
    (d / name).mkdir(parents=True)
    (d / name / 'args.yaml').write_text(yaml.safe_dump({'model': 'vit_2_4_32', **args}))
    (d / name / 'metrics.json').write_text(json.dumps(dict(status='finished', best_top1=acc, final_top1=acc, epochs=2,
                                                           planned_epochs=2, run_id=name)))


def _report(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out): code = main(['report', *argv])
    return code, out.getvalue()


def test_report_study_flag(tmp_path):
    # fabricated runs, for this test only: no finding is claimed from them anywhere else
    _fake_run(tmp_path, 'two_step', 60.0, wq_enable=True, aq_enable=True, study_row='25863')
    _fake_run(tmp_path, 'one_step', 58.5, wq_enable=True, aq_enable=True, study_row='14510')
    _fake_run(tmp_path, 'float', 55.0, study_row='14289')
    code, plain = _report(str(tmp_path))
    assert code == 0 and 'Study accuracy' not in plain
    code, text = _report(str(tmp_path), '--study')
    assert code == 0
    line = next(l for l in text.splitlines() if '| two_step' in l)
    assert '25863' in line and '91.38' in line and '-31.38' in line
    finding = next(l for l in text.splitlines() if 'two-step W2A2 beats one-step W2A2' in l)
    assert '60.00 (25863) vs 58.50 (14510)' in finding and finding.rstrip(' |').endswith('| ✓          | +1.50')
    top = next(l for l in text.splitlines() if 'the float model is on top' in l)
    # the float run is below the quantized ones
    assert top.rstrip(' |').endswith('✗') and '55.00 vs 60.00 (vit-2-4-32)' in top
    code, csv = _report(str(tmp_path), '--study', '--format', 'csv')
    assert code == 0 and csv.splitlines()[0].endswith('Study row,Study accuracy,Δ vs study')


def test_training_with_every_study_semantic(tmp_path, tiny_config):
    "One tiny run through `train` with the three study-compatible choices on: they reach the model and the loss."
    from qvit_nb.train import train
    m = train(output=str(tmp_path), experiment='study', **{**tiny_config, 'mean': None, 'std': None}, device='cpu',
              act_layer='relu', aq_enable=True, aq_bitw=2, aq_learnable_bias=True, aq_learnable_bias_per_channel=True,
              aq_relu_unsigned='study', use_kd=True, teacher='vit_2_4_32', kd_type='all', kd_target='study',
              study_row='46457')
    assert m['status'] == 'finished'
    import torch
    sd = torch.load(tmp_path / 'study' / 'last.pth.tar', map_location='cpu', weights_only=False)['state_dict']
    assert sd['blocks.0.mlp.fc2.aq.bias'].shape == (128,) and sd['blocks.0.mlp.fc1.aq.bias'].shape == (128,)
    assert yaml.safe_load((tmp_path / 'study' / 'args.yaml').read_text())['kd_target'] == 'study'
