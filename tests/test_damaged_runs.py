"""Damaged run files: a torn, mistyped or unreadable `metrics.json` or `summary.csv` keeps its run in the report and
the dashboard, marked, instead of dropping it or failing. Each scenario states its guarantee in the test name. The
good run is a copy of the shared tiny run (two epochs)."""
import json, shutil

from qvit_nb.cli import main as qvit


def test_damaged_metrics_files_are_reported_not_dropped_or_fatal(tmp_path, capsys, tiny_run_copy):
    tiny_run_copy('good')
    for name, text in [('torn', '{"status": "fini'), ('list', '[1, 2]'),
                       ('typed', '{"status": "finished", "best_top1": "abc"}')]:
        (tmp_path / name).mkdir(); (tmp_path / name / 'metrics.json').write_text(text)
    capsys.readouterr()
    assert qvit(['report', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(f"| {n} " in out for n in ('good', 'torn', 'list', 'typed')) and out.count('| damaged ') == 2, out


def test_damaged_summary_or_metrics_keep_their_run_in_the_report_and_the_dashboard(tmp_path, capsys, tiny_run_copy):
    tiny_run_copy('good')
    text = (tmp_path / 'good' / 'summary.csv').read_text()
    for name, summary in [('torn', text[:text.index('\n') + 12]), ('garbage', bytes(range(256)) * 8),
                          ('columns', 'x,y\n1,2\n'), ('empty', ''), ('text', text.replace('\n1,', '\nnan?,', 1)),
                          ('badmetrics', text)]:
        shutil.copytree(tmp_path / 'good', tmp_path / name)
        m = json.loads((tmp_path / name / 'metrics.json').read_text())
        (tmp_path / name / 'metrics.json').write_text(json.dumps({**m, 'run_id': name}))
        p = tmp_path / name / 'summary.csv'
        p.write_bytes(summary) if isinstance(summary, bytes) else p.write_text(summary)
    (tmp_path / 'badmetrics' / 'metrics.json').write_bytes(bytes(range(256)))
    capsys.readouterr()
    assert qvit(['report', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    names = ('good', 'torn', 'garbage', 'columns', 'empty', 'text', 'badmetrics')
    assert all(f"| {n} " in out for n in names) and out.count('| damaged ') == 1, out
    assert qvit(['dashboard', str(tmp_path), '--html', str(tmp_path / 'd.html')]) == 0
    page = (tmp_path / 'd.html').read_text()
    assert page.count('</tr>') == 1 + len(names), page.count('</tr>')
    assert page.count('(no curve: damaged summary.csv)') == 5
    assert 'top1 per epoch (5 run(s) without a curve: damaged summary.csv)' in page
