"""`qvit export -o`, `qvit report --out` and `qvit dashboard --html` write only a regular file (new, or replaced
atomically): a FIFO or a character device node at the path (made here in a temporary folder, never a real /dev node)
is refused with one line, exit status 2, and left as it was."""
import contextlib, io, os, stat

import pytest

from qvit_nb.cli import main as qvit


def _nodes(tmp_path) -> list:
    os.mkfifo(tmp_path / 'fifo')
    made = [(tmp_path / 'fifo', stat.S_ISFIFO, 'a FIFO')]
    if os.geteuid() == 0:                                   # a device node needs root to make
        os.mknod(tmp_path / 'null', 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        made.append((tmp_path / 'null', stat.S_ISCHR, 'a character device'))
    return made


@pytest.mark.parametrize('command', ['export', 'report', 'dashboard'])
def test_an_output_path_that_is_not_a_regular_file_is_refused_and_left_alone(command, tiny_run, tmp_path, capsys):
    for node, is_kind, kind in _nodes(tmp_path):
        argv = {'export': ['export', str(tiny_run), '-o', str(node)],
                'report': ['report', str(tiny_run.parent), '--out', str(node)],
                'dashboard': ['dashboard', str(tiny_run.parent), '--html', str(node)]}[command]
        with contextlib.redirect_stdout(io.StringIO()): assert qvit(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"qvit {command}: error: {node} is {kind}, not a regular file: refusing to write over it "
                       "(give a file's path)"], err
        assert is_kind(os.stat(node).st_mode)               # still the node it was
