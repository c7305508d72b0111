"""Checkpoints: a failed write leaves the previous one whole; a truncated, garbled, bit-flipped or empty one is named
with the previous good one offered; an untrusted payload is refused. Each scenario states its guarantee in the test
name. The damaged checkpoints are copies of the shared tiny run (two epochs: its `last-prev` holds epoch 0)."""
import os, random
from pathlib import Path

import pytest
import torch

from flags import cli_flags
from qvit_nb.checkpoints import CheckpointError, load_checkpoint, previous_checkpoint, save_checkpoint
from qvit_nb.cli import main as qvit
from qvit_nb.config import load_config


def test_a_failed_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    p = tmp_path / 'last.pth.tar'
    save_checkpoint({'state_dict': {'w': torch.ones(3)}, 'epoch': 0}, p)

    def crash(*a, **k): raise OSError('disk full')
    monkeypatch.setattr(os, 'fsync', crash)
    with pytest.raises(OSError): save_checkpoint({'state_dict': {'w': torch.zeros(3)}, 'epoch': 1}, p)
    assert load_checkpoint(p)['epoch'] == 0
    assert sorted(f.name for f in tmp_path.iterdir()) == ['last.pth.tar']


@pytest.mark.parametrize('damage', ['truncate', 'garbage'])
def test_corrupt_last_checkpoint_is_named_and_the_previous_one_offered(tmp_path, damage, capsys, tiny_config,
                                                                      tiny_run_copy):
    tiny_run_copy('run')
    last = tmp_path / 'run' / 'last.pth.tar'
    before = {f.name: f.stat().st_mtime_ns for f in (tmp_path / 'run').iterdir()}
    last.write_bytes(last.read_bytes()[:2000] if damage == 'truncate' else os.urandom(5000))
    argv = ['--output', str(tmp_path), '--experiment', 'run', '--resume']
    assert qvit(['train', *cli_flags({**tiny_config, 'epochs': 3}), *argv]) == 2
    err = capsys.readouterr().err
    assert str(last) in err and f"the previous good checkpoint is {previous_checkpoint(last)}" in err
    after = {f.name: f.stat().st_mtime_ns for f in (tmp_path / 'run').iterdir() if f.name != 'last.pth.tar'}
    assert all(before[k] == v for k, v in after.items() if k != 'metrics.json')     # nothing overwritten but the status
    assert load_checkpoint(previous_checkpoint(last))['epoch'] == 0


def test_untrusted_checkpoint_payload_is_refused(tmp_path):
    class Evil:
        def __reduce__(self): return (os.system, (f'touch {tmp_path}/pwned',))
    p = tmp_path / 'evil.pth.tar'
    torch.save({'state_dict': {}, 'x': Evil()}, p)
    with pytest.raises(CheckpointError, match='refused'): load_checkpoint(p)
    assert not (tmp_path / 'pwned').exists()
    (tmp_path / 'evil.yml').write_text('epochs: !!python/object/apply:os.system ["touch pwned2"]\n')
    with pytest.raises(Exception): load_config(tmp_path / 'evil.yml')
    assert not Path('pwned2').exists()


def _tensor_regions(path):
    "(start, size) of each stored tensor's bytes inside a torch zip checkpoint (stored uncompressed)."
    import struct, zipfile
    raw = Path(path).read_bytes()
    out = []
    for info in zipfile.ZipFile(path).infolist():
        if '/data/' in info.filename and info.file_size >= 256:
            n, m = struct.unpack('<HH', raw[info.header_offset + 26:info.header_offset + 30])
            out.append((info.header_offset + 30 + n + m, info.file_size))
    return out


def test_flipped_bytes_in_a_checkpoint_are_caught_and_the_previous_one_offered(capsys, tiny_run_copy):
    last = tiny_run_copy('run') / 'last.pth.tar'
    good = last.read_bytes()
    regions = _tensor_regions(last)
    assert regions
    rng = random.Random(17)
    for attempt in range(15):
        raw = bytearray(good)
        for _ in range(20):
            start, size = rng.choice(regions)
            raw[start + rng.randrange(size)] ^= 1 << rng.randrange(8)
        last.write_bytes(bytes(raw))
        with pytest.raises(CheckpointError, match='do not match the checksum') as e:
            load_checkpoint(last)
        assert f"--resume {previous_checkpoint(last)}" in str(e.value), attempt
    assert qvit(['train', '--resume', str(last), '--epochs', '3']) == 2
    err = capsys.readouterr().err
    assert 'is damaged' in err and 'Traceback' not in err and f"--resume {previous_checkpoint(last)}" in err


def test_an_empty_checkpoint_is_named_with_the_fallback_not_a_traceback(capsys, tiny_run_copy):
    last = tiny_run_copy('run') / 'last.pth.tar'
    last.write_bytes(b'')
    assert qvit(['train', '--resume', str(last), '--epochs', '3']) == 2
    err = capsys.readouterr().err
    assert 'is empty (0 bytes)' in err and f"--resume {previous_checkpoint(last)}" in err and 'Traceback' not in err
