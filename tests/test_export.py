"""Export of trained runs (the demo's kinds: a float model, 2-bit activations, W2A2 with quantized attention,
per-channel 2-bit weights) to ONNX, with parity under ONNX Runtime on the whole digits test split."""
import contextlib, io

import pytest
import torch

from qvit_nb.train import train
from qvit_nb.export import export_run, onnx_parity
from qvit_nb.rundata import load_run_model, run_eval_data

# models that learned something, so that parity means something: the whole digits split, 3 epochs, the dataset's
# normalisation
LONGER = dict(epochs=3, batch_size=64, max_images=0, mean=None, std=None, lr=2e-3)
RUNS = {'float': {},
        'a2': dict(aq_enable=True, aq_bitw=2, aq_asym=True),
        'w2a2_attn': dict(aq_enable=True, aq_bitw=2, wq_enable=True, wq_bitw=2, attn_q=True, aq_learnable_bias=True,
                      aq_learnable_bias_per_channel=True),
        'w2_per_channel': dict(wq_enable=True, wq_bitw=2, wq_per_channel=True)}


@pytest.fixture(scope='module')
def runs(tmp_path_factory, tiny_config):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp('runs')
    with contextlib.redirect_stdout(io.StringIO()):
        for name, over in RUNS.items(): train(output=str(out), experiment=name, **{**tiny_config, **LONGER, **over})
    return out


@pytest.mark.parametrize('name', list(RUNS))
def test_exported_run_matches_the_trained_model_on_the_test_split(runs, name):
    path, size = export_run(runs / name)
    assert path == runs / name / 'model.onnx' and path.stat().st_size > 0
    model = load_run_model(runs / name)
    parity = onnx_parity(model, path, run_eval_data(runs / name, max_images=10_000, batch_size=120))
    print(name, parity.to_dict('records'), size)
    assert parity.images.tolist() == [360, 360]                    # the whole digits test split
    assert parity.ok.all(), parity
    if 'w2' in name: assert size['ratio'] > 1.5                     # weights packed at 2 bits
    else: assert 0 <= size['bytes'] - size['float32_bytes'] <= 4 * 64   # float32, plus the activation steps and shifts


def test_export_of_a_missing_or_damaged_checkpoint_says_so(runs, tmp_path):
    import shutil
    bad = tmp_path / 'bad'; shutil.copytree(runs / 'a2', bad, ignore=shutil.ignore_patterns('*.onnx'))
    for f in ('model_best.pth.tar', 'last.pth.tar'): (bad / f).write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='bad/model_best.pth.tar'): export_run(bad)
    assert not (bad / 'model.onnx').exists()
    with pytest.raises(ValueError, match='not a run directory'): export_run(tmp_path / 'nowhere')


def test_qvit_export_writes_the_file_and_prints_the_storage(runs, tmp_path, capsys):
    from qvit_nb.cli import main
    assert main(['export', str(runs / 'w2a2_attn'), '-o', str(tmp_path / 'w2a2.onnx')]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / 'w2a2.onnx').is_file() and 'ONNX opset 18' in out and 'KB at its bit widths' in out
    assert main(['export', str(tmp_path / 'nowhere')]) == 2
    assert main(['export', str(runs / 'a2'), '-o', str(tmp_path / 'missing' / 'x.onnx')]) == 2
    assert 'does not exist' in capsys.readouterr().err


@pytest.mark.parametrize('key, value', [('wq_bitw', '4'), ('aq_enable', 'true'), ('model', 'vit_7_4_32_sine')])
def test_an_args_yaml_that_disagrees_with_the_checkpoint_is_refused_in_one_line(key, value, tiny_run_copy, capsys):
    """The checkpoint's own config says how its model was built: an edited `args.yaml` once exported another model
    (bits) or ended in a traceback (a quantizer or model changed); now one line names the key, and nothing is written.
    A key a resume may change (`lr`, `workers`) may differ."""
    import re
    from qvit_nb.cli import main
    run = tiny_run_copy('edited')
    text = (run / 'args.yaml').read_text()
    (run / 'args.yaml').write_text(re.sub(rf'(?m)^{key}: .*$', f'{key}: {value}', text))
    capsys.readouterr()
    assert main(['export', str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"args.yaml disagrees with the config saved in checkpoint model_best.pth.tar ({key} " \
        in err[0], err
    assert not (run / 'model.onnx').exists()
    (run / 'args.yaml').write_text(re.sub(r'(?m)^lr: .*$', 'lr: 0.5', re.sub(r'(?m)^workers: .*$', 'workers: 7', text)))
    assert main(['export', str(run)]) == 0 and (run / 'model.onnx').is_file()


def test_a_fifo_as_args_yaml_or_checkpoint_is_refused_in_one_line(tiny_run_copy, capsys):
    import os
    from qvit_nb.cli import main
    for f in ('args.yaml', 'model_best.pth.tar'):
        run = tiny_run_copy(f.split('.')[0])
        (run / f).unlink(); os.mkfifo(run / f)
        capsys.readouterr()
        assert main(['export', str(run)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{run / f} is " in err[0] and 'not a regular file' in err[0], err
