"""Oscillation tracking and its remedies in real training runs: the files a tracked run writes, and a run killed in the
middle of CGA (with freezing and dampening on) resuming to the uninterrupted run's exact state."""
import contextlib, io, json
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest
import torch

from qvit_nb.checkpoints import load_checkpoint
from qvit_nb.oscillation import OSC_COLUMNS
from qvit_nb.train import TIMING_COLUMNS, TrainingRun, train

W2 = dict(wq_enable=True, wq_bitw=2, wq_per_channel=True, osc_momentum=0.1)


def quiet_train(**kw):
    with contextlib.redirect_stdout(io.StringIO()): return train(**kw)


def test_a_tracked_run_writes_its_oscillation_per_layer_and_epoch(tmp_path, tiny_config):
    m = quiet_train(**{**tiny_config, 'epochs': 2}, **W2, track_oscillation=True, output=str(tmp_path), experiment='w2')
    run = tmp_path / 'w2'
    osc = pd.read_csv(run / 'oscillation.csv')
    assert list(osc.columns) == ['epoch'] + OSC_COLUMNS
    layers = ['blocks.0.attn.qkv', 'blocks.0.attn.proj', 'blocks.0.mlp.fc1', 'blocks.0.mlp.fc2']
    assert osc[osc.epoch == 0].layer.tolist()[:4] == layers and sorted(osc.epoch.unique()) == [0, 1]
    assert osc.oscillating.between(0, 1).all() and (osc.frozen == 0).all()
    summary = pd.read_csv(run / 'summary.csv')
    assert {'oscillating', 'osc_rate', 'osc_freq', 'frozen', 'cga_frozen'} <= set(summary.columns)
    last = osc[osc.epoch == 1]
    share = (last.oscillating * last.weights).sum() / last.weights.sum()
    assert m['oscillation']['oscillating'] == pytest.approx(share, rel=1e-5)
    assert json.loads((run / 'metrics.json').read_text())['oscillation']['weights'] == last.weights.sum()


def test_an_untracked_run_writes_no_oscillation_files(tiny_run):
    assert not (tiny_run / 'oscillation.csv').exists()
    assert 'oscillation' not in json.loads((tiny_run / 'metrics.json').read_text())
    assert not any('.osc.' in k for k in load_checkpoint(tiny_run / 'last.pth.tar')['state_dict'])


def _state(run_dir: Path):
    ck = load_checkpoint(run_dir / 'last.pth.tar')
    return (ck['state_dict'], ck['optimizer'], pd.read_csv(run_dir / 'summary.csv').drop(columns=TIMING_COLUMNS),
            pd.read_csv(run_dir / 'oscillation.csv'))


def test_a_run_killed_during_cga_resumes_bit_exactly(tmp_path, tiny_config):
    over = {**tiny_config, 'epochs': 3, **W2, 'aq_enable': True, 'aq_bitw': 2, 'freeze_threshold': 0.05,
            'dampen_weight': 0.01, 'cga_epochs': 2, 'cga_boundary': 0.2, 'output': str(tmp_path)}
    quiet_train(**over, experiment='ref')
    save = TrainingRun._save_epoch
    def save_then_die(self, epoch, *args):          # killed right after epoch 1, the first of the two CGA epochs
        save(self, epoch, *args)
        if epoch == 1: raise KeyboardInterrupt
    with mock.patch.object(TrainingRun, '_save_epoch', save_then_die), pytest.raises(KeyboardInterrupt):
        quiet_train(**over, experiment='killed')
    assert load_checkpoint(tmp_path / 'killed' / 'last.pth.tar')['epoch'] == 1
    quiet_train(**over, experiment='killed', resume='last')
    (sa, oa, ca, xa), (sb, ob, cb, xb) = _state(tmp_path / 'killed'), _state(tmp_path / 'ref')
    assert sa.keys() == sb.keys() and any('.wq.osc.frozen' in k for k in sa)
    for k in sa: assert torch.equal(sa[k], sb[k]), k
    for i, (x, y) in enumerate(zip(oa['state'].values(), ob['state'].values())):
        for k in x: assert torch.equal(torch.as_tensor(x[k]), torch.as_tensor(y[k])), (i, k)
    pd.testing.assert_frame_equal(ca, cb)
    pd.testing.assert_frame_equal(xa, xb)
    assert (xb[xb.epoch >= 1].cga_frozen > 0).all() and (xb[xb.epoch == 0].cga_frozen == 0).all()


def test_cga_and_qkr_run_as_a_chain_step_from_a_trained_run(tmp_path, tiny_config):
    w2a2 = {**tiny_config, **W2, 'aq_enable': True, 'aq_bitw': 2, 'attn_q': True, 'output': str(tmp_path)}
    quiet_train(**w2a2, experiment='trained')
    m = quiet_train(**w2a2, experiment='cga', initial_checkpoint=str(tmp_path / 'trained' / 'model_best.pth.tar'),
                    qk_reparam=True, cga_epochs=1, cga_boundary=0.1)
    assert m['status'] == 'finished'
    osc = pd.read_csv(tmp_path / 'cga' / 'oscillation.csv')
    assert {'blocks.0.attn.qk', 'blocks.0.attn.v'} <= set(osc.layer)           # the query-key product is annealed too
    assert (osc.cga_frozen > 0).all()
    sd = load_checkpoint(tmp_path / 'cga' / 'last.pth.tar')['state_dict']
    assert 'blocks.0.attn.qk.weight' in sd and not any('attn.qkv' in k for k in sd)


def test_a_statsq_run_trains_tracks_and_weighs_its_bits(tmp_path, tiny_config):
    m = quiet_train(**tiny_config, **{**W2, 'wq_mode': 'statsq'}, track_oscillation=True, output=str(tmp_path),
                    experiment='statsq')
    assert m['status'] == 'finished' and m['oscillation']['weights'] > 0
    lsq = quiet_train(**tiny_config, **W2, output=str(tmp_path), experiment='lsq')
    assert m['storage_kib'] == lsq['storage_kib']       # 2-bit levels and one float32 step (alpha) per output channel


def test_a_tracked_and_frozen_run_teaches_as_it_was_trained(tmp_path, tiny_config):
    teacher = {**tiny_config, **W2, 'freeze_threshold': 0.01, 'qk_reparam': True, 'output': str(tmp_path)}
    quiet_train(**teacher, experiment='teacher')
    ckpt = tmp_path / 'teacher' / 'model_best.pth.tar'
    m = quiet_train(**tiny_config, **W2, cga_epochs=1, use_kd=True, teacher='vit_2_4_32', teacher_checkpoint=str(ckpt),
                    output=str(tmp_path), experiment='student')
    assert m['status'] == 'finished'
    from qvit_nb.builders import build_teacher
    from qvit_nb.config import TrainConfig
    from qvit_nb.rundata import load_run_model
    t = build_teacher(TrainConfig(**{**tiny_config, **W2, 'use_kd': True, 'teacher': 'vit_2_4_32',
                                     'teacher_checkpoint': str(ckpt)}), 10)
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(t(x), load_run_model(tmp_path / 'teacher').eval()(x))   # the run's own model, frozen levels too
