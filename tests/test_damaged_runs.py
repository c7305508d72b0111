"""Damaged run files: a torn, mistyped or unreadable `metrics.json` or `summary.csv` keeps its run in the report and
the dashboard, marked, instead of dropping it or failing. Each scenario states its guarantee in the test name. The
good run is a copy of the shared tiny run (two epochs)."""
import csv, io, json, os, shutil

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


def _qvit_bounded(*argv, timeout=120):
    """`qvit ARGV` in a child process that may take `timeout` seconds and 4 GiB of address space: a reader that waits on
    a FIFO or reads `/dev/zero` to the end fails the test instead of hanging pytest or filling the machine's memory."""
    import resource, subprocess, sys
    from flags import ENV
    def limit(): resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    try: return subprocess.run([sys.executable, '-m', 'qvit_nb.cli', *argv], capture_output=True, text=True, env=ENV,
                               timeout=timeout, preexec_fn=limit)
    except subprocess.TimeoutExpired: raise AssertionError(f"qvit {' '.join(argv)} hung ({timeout} s)") from None


def test_a_fifo_or_an_endless_file_in_a_run_folder_is_refused_not_waited_on(tmp_path, tiny_run_copy):
    """A FIFO (or a link to `/dev/zero`) as metrics.json, args.yaml or summary.csv once made `qvit report` and `qvit
    dashboard` hang for good (or fill memory): now each run is listed, a refused metrics.json as damaged."""
    names = []
    for f in ('metrics.json', 'args.yaml', 'summary.csv'):
        for kind in ('fifo', 'zero'):
            name = f"{kind}_{f.split('.')[0]}"; names.append(name)
            p = tiny_run_copy(name) / f
            p.unlink()
            os.mkfifo(p) if kind == 'fifo' else p.symlink_to('/dev/zero')
    r = _qvit_bounded('report', str(tmp_path), '--format', 'csv')
    assert r.returncode == 0, r.stderr[-2000:]
    status = {row['Run ID']: row['Status'] for row in csv.DictReader(io.StringIO(r.stdout))}
    assert sorted(status) == sorted(names), r.stdout
    assert sorted(n for n, s in status.items() if s == 'damaged') == ['fifo_metrics', 'zero_metrics'], r.stdout
    assert list(status.values()).count('finished') == 4, r.stdout
    r = _qvit_bounded('dashboard', str(tmp_path), '--html', str(tmp_path / 'd.html'))
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / 'd.html').read_text().count('(no curve: damaged summary.csv)') == 2


def test_a_runs_folder_too_deep_to_search_is_refused_in_one_line(tmp_path, tiny_run_copy):
    "A runs folder 1,100 directories deep ended `qvit report` in a RecursionError; now one line names the bound."
    tiny_run_copy('good')
    made = [tmp_path]
    for _ in range(1100): made.append(made[-1] / 'a'); made[-1].mkdir()      # os.makedirs recurses too
    try:
        r = _qvit_bounded('report', str(tmp_path))
        assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-2000:]
        assert len(r.stderr.strip().splitlines()) == 1 and 'more than 32 levels deep' in r.stderr, r.stderr
    finally:                                # removed here: pytest's own cleanup (shutil.rmtree) recurses as deep
        for d in reversed(made[1:]): d.rmdir()
