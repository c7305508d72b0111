"""The dashboards and notebooks in a real browser: Voila serves the shipped app `dashboards/activations.ipynb` on a
folder of runs whose first run is a float model, headless Debian chromium (driven by Playwright, never a downloaded
browser) waits for the histogram of the quantized run, picks another layer and checks the plot changed, then picks
the float run and reads why it has none; JupyterLab opens a notebook of `nbs/`, runs all its cells and shows no
error; the exported standalone HTML pages render in the same chromium without a kernel.
Screenshots go to pytest's tmp dir. Skips (with the reason) only when /usr/bin/chromium is missing: `.ci/run`
installs it with `apt-get install chromium`."""
import contextlib, io, json, os, re, shutil, signal, socket, subprocess, sys, time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = '/usr/bin/chromium'
# Root in a container, no network: without these chromium hangs on the sandbox or on background network calls.
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage']
LAYER0, LAYER1 = 'blocks.0.attn.qkv', 'blocks.1.mlp.fc2'
BARS = '.js-plotly-plot .barlayer .trace.bars .point path'

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                                 reason=f"Debian chromium not found at {CHROMIUM}: `apt-get install chromium` failed "
                                        "or was not run (.ci/run installs it); the browser tests need it and never "
                                        "download a browser")]


@pytest.fixture(scope='module')
def quantized_run(tmp_path_factory, tiny_config):
    """The tiny config for two epochs with 2-bit weights and activations, attention quantized, the dataset's
    normalisation."""
    import torch
    torch.set_num_threads(1)
    from qvit_nb.train import train
    out = tmp_path_factory.mktemp('runs')
    with contextlib.redirect_stdout(io.StringIO()):
        train(**{**tiny_config, 'mean': None, 'std': None, 'epochs': 2}, output=str(out), experiment='tiny',
              aq_enable=True, aq_bitw=2, wq_enable=True, wq_bitw=2, attn_q=True, tricks='tiny 2b')
    return out / 'tiny'


@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    "Headless Debian chromium through Playwright's bundled driver, with a fresh profile directory."
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(str(tmp_path_factory.mktemp('chromium-profile')),
                                                    executable_path=CHROMIUM, headless=True, args=FLAGS,
                                                    viewport={'width': 1280, 'height': 1000}, timeout=60_000)
        try: yield ctx
        finally: ctx.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.fixture(scope='module')
def mixed_runs(quantized_run, tmp_path_factory, tiny_config):
    "A folder as `qvit demo` leaves it: a float run ('afloat', listed first, 32 images) next to the quantized run."
    from qvit_nb.train import train
    out = tmp_path_factory.mktemp('mixed')
    shutil.copytree(quantized_run, out / 'tiny')
    with contextlib.redirect_stdout(io.StringIO()):
        train(**{**tiny_config, 'mean': None, 'std': None, 'max_images': 32}, output=str(out), experiment='afloat',
              tricks='float')
    return out


def _env(tmp: Path, **extra) -> dict:
    "The repository first on the path, and every Jupyter directory (runtime, config, settings) in `tmp`."
    path = os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep)
    return {**os.environ, 'PYTHONPATH': path,
            'JUPYTER_RUNTIME_DIR': str(tmp / 'jupyter-runtime'), 'JUPYTER_CONFIG_DIR': str(tmp / 'jupyter-config'),
            'JUPYTER_PLATFORM_DIRS': '1', 'OMP_NUM_THREADS': '1', **extra}


@contextlib.contextmanager
def _serve(name: str, args: list, port: int, cwd: Path, env: dict, tmp: Path):
    "`python -m <args>` listening on 127.0.0.1:`port`; the server and its kernels are stopped on exit."
    log = open(tmp / f'{name}.log', 'w')
    proc = subprocess.Popen([sys.executable, '-m', *args], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}): {(tmp / f'{name}.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                socket.create_connection(('127.0.0.1', port), timeout=1).close(); break
            if time.monotonic() > deadline: raise TimeoutError(f"{name} did not listen on port {port} within 90 s")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)          # both servers shut their kernels down on SIGTERM
            try: proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL); proc.wait(5)
        log.close()


@contextlib.contextmanager
def voila(notebook: Path, tmp: Path, **env):
    "Voila serving `notebook` on 127.0.0.1 at a free port (`env`: extra environment for its kernel)."
    port = _free_port()
    with _serve('voila', ['voila', str(notebook), '--no-browser', f'--port={port}', '--Voila.ip=127.0.0.1',
                          '--ServerApp.ip=127.0.0.1'], port, tmp, _env(tmp, **env), tmp) as url:
        yield url


@contextlib.contextmanager
def jupyterlab(root: Path, tmp: Path):
    """JupyterLab on 127.0.0.1 at a free port, no token, serving `root`; runtime, config and settings in `tmp`.
    Autosave is off, so running a notebook of `nbs/` never writes its outputs back."""
    port = _free_port()
    settings = tmp / 'lab-settings'
    # the tracker: every cell in the DOM; the notebooks carry no kernelspec: start the default kernel, no dialog
    for plugin, value in {'docmanager-extension/plugin': {'autosave': False},
                          'notebook-extension/tracker': {'windowingMode': 'none',
                                                         'autoStartDefaultKernel': True}}.items():
        f = settings / '@jupyterlab' / f'{plugin}.jupyterlab-settings'
        f.parent.mkdir(parents=True, exist_ok=True); f.write_text(json.dumps(value))
    env = _env(tmp, JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(tmp / 'lab-workspaces'))
    with _serve('jupyterlab', ['jupyterlab', '--no-browser', f'--ServerApp.port={port}', '--ServerApp.port_retries=0',
                               '--ServerApp.ip=127.0.0.1', '--IdentityProvider.token=', '--ServerApp.password=',
                               f'--ServerApp.root_dir={root}', *(['--allow-root'] if os.geteuid() == 0 else [])],
                 port, root, env, tmp) as url:
        yield url


def _plot_state(page) -> dict:
    "What the browser shows: the plot title, the y data of the first trace in plotly's graph div, and the bar paths."
    return page.evaluate("""() => {
        const gd = document.querySelector('.js-plotly-plot');
        return {title: (gd.querySelector('.gtitle') || {}).textContent || '',
                y: Array.from(gd.data[0].y || []).map(Number),
                bars: Array.from(gd.querySelectorAll('.barlayer .trace.bars .point path'))
                           .map(p => p.getAttribute('d'))};
    }""")


STDERR = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
PLOT_TITLE = "document.querySelector('.js-plotly-plot .gtitle').textContent"
APP = REPO / 'dashboards' / 'activations.ipynb'


def _dropdown(page, label: str):
    return page.locator('.widget-dropdown').filter(has=page.locator('label', has_text=label)).locator('select')


def test_voila_activation_dashboard(mixed_runs, browser, tmp_path):
    """The README's command: `QVIT_RUNS=<relative folder> voila dashboards/activations.ipynb`, typed where the folder is
    relative to (the shell's $PWD), while Voila runs the app's kernel in dashboards/."""
    t0 = time.monotonic()
    relative = os.path.relpath(mixed_runs, tmp_path)
    with voila(APP, tmp_path, QVIT_RUNS=relative, PWD=str(tmp_path)) as url:
        page = browser.new_page()
        try:
            page.goto(url, wait_until='domcontentloaded', timeout=60_000)
            page.wait_for_selector(BARS, timeout=120_000)     # kernel start, imports, data, collection
            assert _dropdown(page, 'run').input_value() == 'tiny'    # not the float run listed first
            before = _plot_state(page)
            assert len(before['bars']) > 10, before            # the histogram bars are drawn
            page.screenshot(path=str(tmp_path / 'voila-before.png'), full_page=True)
            _dropdown(page, 'layer').select_option(LAYER1)
            page.wait_for_function(f"() => {PLOT_TITLE}.startsWith({LAYER1!r})",
                                   timeout=30_000)
            page.wait_for_timeout(300)                         # let plotly finish redrawing the bars
            after = _plot_state(page)
            assert after['y'] != before['y']                   # new histogram data reached the browser
            assert after['bars'] != before['bars'] and len(after['bars']) > 10   # and the drawn bars changed
            page.screenshot(path=str(tmp_path / 'voila-after.png'), full_page=True)
            weights = page.locator('.js-plotly-plot').nth(1)          # the weight view, below the table
            weights.scroll_into_view_if_needed()
            assert _dropdown(page, 'weights').input_value() == LAYER0
            assert weights.locator('.gtitle').text_content().startswith(f"{LAYER0}: 2-bit weights")
            SCREENS.mkdir(parents=True, exist_ok=True)
            weights.screenshot(path=str(SCREENS / 'voila-weights.png'))
            _dropdown(page, 'run').select_option('afloat')     # the float run: a sentence, never an error box
            page.get_by_text("it is a float model").wait_for(timeout=60_000)
            assert page.locator(STDERR).count() == 0
            page.screenshot(path=str(tmp_path / 'voila-float.png'), full_page=True)
        finally: page.close()
    print(f"voila test: {time.monotonic() - t0:.1f} s; screenshots in {tmp_path}")


def test_voila_says_why_the_dashboard_cannot_open(browser, tmp_path):
    "A folder that is not there: the page names it and where it was looked for, not Voila's generic error."
    with voila(APP, tmp_path, QVIT_RUNS='runs/not-here', PWD=str(tmp_path)) as url:
        page = browser.new_page()
        try:
            page.goto(url, wait_until='domcontentloaded', timeout=60_000)
            page.get_by_text('The dashboard cannot open').wait_for(timeout=120_000)
            text = page.inner_text('body')
            assert "QVIT_RUNS='runs/not-here': no such folder" in text and str(tmp_path / 'runs/not-here') in text, text
            assert 'There was an error when executing cell' not in text
            page.screenshot(path=str(tmp_path / 'voila-cannot-open.png'), full_page=True)
        finally: page.close()


PROMPTS = ("[...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')]"
           ".map(e => e.textContent.trim())")
STATUS_BAR = "[...document.querySelectorAll('.jp-StatusBar-TextItem')].map(e => e.textContent.trim())"


def _lab_state(page, tmp: Path) -> str:
    """What JupyterLab shows when a wait fails: the cells' prompts, the kernel's state, any dialog, the server log's
    tail."""
    try:
        seen = page.evaluate(f"""() => ({{prompts: {PROMPTS},
            status: (document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator')
                     || {{dataset: {{}}}}).dataset.status,
            status_bar: {STATUS_BAR}.filter(t => t.includes(' | ')),
            dialogs: [...document.querySelectorAll('.jp-Dialog')].map(d => d.innerText.slice(0, 300))}})""")
        page.screenshot(path=str(tmp / 'jupyterlab-failed.png'), full_page=True)
    except Exception as e: seen = f"(the page could not be read: {e})"
    log = tmp / 'jupyterlab.log'
    return f"browser: {seen}\nscreenshot: {tmp / 'jupyterlab-failed.png'}\nserver log (tail):\n" + \
           (log.read_text()[-3000:] if log.exists() else '(none)')


def _run_all_cells(page, tries: int = 6):
    """Run > Run All Cells, the item matched by its exact label and clicked only once the menu shows it enabled
    (reopening the menu up to `tries` times). A guard: a disabled item was never seen; the hang it was written for
    was Run All before the kernel attached (see the caller's wait)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    item = page.locator('.lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel',
                        has_text=re.compile(r'^Run All Cells$'))
    for _ in range(tries):
        page.locator('.lm-MenuBar-itemLabel', has_text='Run').first.click()
        try: return item.click(timeout=10_000)
        except PlaywrightTimeout: page.keyboard.press('Escape')
    raise PlaywrightTimeout(f"Run All Cells stayed disabled in {tries} openings of the Run menu")


def test_jupyterlab_runs_and_saves_a_notebook_and_the_gate_stays_green(browser, tmp_path):
    """First contact: open a notebook of nbs/ in JupyterLab, Run > Run All Cells, no error and no stderr box, no news
    pop-up; save it (outputs and all, as a user does) and the gate's sync check still passes. On a copy of the
    checkout (its git history included), so the real notebooks are never written."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    import nbformat
    name = '00a_lsq.ipynb'                # a few seconds of compute, and outputs to show
    repo = tmp_path / 'checkout'
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns('.venv', 'runs', '__pycache__', '.ipynb_checkpoints'))
    with jupyterlab(repo / 'nbs', tmp_path) as url:
        page = browser.new_page()
        try:
            page.goto(f"{url}lab/tree/{name}", wait_until='domcontentloaded', timeout=90_000)
            n_code = sum(c.cell_type == 'code' for c in nbformat.read(str(repo / 'nbs' / name), as_version=4).cells)
            cells = "document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell')"
            page.wait_for_function(f"() => {cells}.length === {n_code}", timeout=60_000)   # every cell (windowing off)
            try:
                # The kernel attached and idle, as the status bar says it. Not the toolbar's indicator: that reads
                # "idle" while the status bar still says "No Kernel | Initializing", and Run All Cells then returns
                # without running anything (JupyterLab skips cells while the session has no kernel): the CI timeout of
                # 2 Dec.
                page.wait_for_function(f"() => {STATUS_BAR}.some(t => /^(?!No Kernel).+ \\| Idle$/.test(t))",
                                       timeout=120_000)
                _run_all_cells(page)
                page.wait_for_function(f"() => {PROMPTS}.some(t => t !== '[ ]:')", timeout=60_000)   # the run began
                page.wait_for_function(f"""() => {{
                    const p = {PROMPTS};
                    const idle = document.querySelector(
                        '.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]');
                    return idle && p.length && p.every(t => /^\\[\\d+\\]:$/.test(t)); }}""", timeout=300_000)
            except PlaywrightTimeout as e:
                raise AssertionError(f"{e}\n{_lab_state(page, tmp_path)}") from None
            page.screenshot(path=str(tmp_path / 'jupyterlab.png'), full_page=True)
            boxes = page.locator(STDERR).all_inner_texts()
            assert not boxes, boxes[0][-2000:]                   # no error, no warning the reader did not cause
            assert page.locator('.jp-NotebookPanel .jp-OutputArea-output').count() > 0    # the tutorial's outputs
            assert page.get_by_text('Jupyter news').count() == 0           # the venv's settings: no news pop-up
            page.locator('.jp-NotebookPanel .jp-Cell').first.click()
            page.keyboard.press('Control+s')                               # save, as a user does
            deadline = time.monotonic() + 60
            saved = lambda: nbformat.read(str(repo / 'nbs' / name), as_version=4)
            while not any(c.get('execution_count') for c in saved().cells):
                assert time.monotonic() < deadline, f"the notebook was not saved\n{_lab_state(page, tmp_path)}"
                time.sleep(0.5)
        finally: page.close()
    assert any(c.get('outputs') for c in saved().cells)                     # saved with its outputs
    r = subprocess.run([sys.executable, 'tools/sync_check.py'], cwd=repo, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_exported_html_renders_without_kernel(quantized_run, browser, tmp_path):
    from qvit_nb.dashboard import activation_dashboard
    from qvit_nb.cli import main
    dashboard = activation_dashboard(quantized_run, batches=1, max_images=64, batch_size=32, layer=LAYER0)
    page_act = dashboard.to_html(tmp_path / 'act.html')
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(['dashboard', str(quantized_run.parent), '--html', str(tmp_path / 'acc.html')]) == 0
    page = browser.new_page()
    try:
        page.route('http*://**', lambda route: route.abort())   # prove nothing is fetched from the network
        page.goto(page_act.as_uri(), timeout=30_000)
        page.wait_for_selector(BARS, timeout=30_000)
        before = _plot_state(page)
        assert before['title'].startswith(LAYER0) and len(before['bars']) > 10
        page.select_option('#qvit-activations-layer', LAYER1)      # the page's own layer select: no kernel involved
        page.wait_for_function(f"() => {PLOT_TITLE}.startsWith({LAYER1!r})",
                               timeout=15_000)
        assert _plot_state(page)['bars'] != before['bars']
        page.screenshot(path=str(tmp_path / 'html-activations.png'), full_page=True)

        page.goto((tmp_path / 'acc.html').as_uri(), timeout=30_000)
        page.wait_for_selector('.js-plotly-plot .scatterlayer .trace', timeout=30_000)
        page.wait_for_selector(BARS, timeout=30_000)
        assert page.locator('table tbody tr').count() == 1 and 'tiny' in page.locator('table').inner_text()
        page.screenshot(path=str(tmp_path / 'html-accuracy.png'), full_page=True)
    finally: page.close()


SCREENS = Path('/tmp/osc_screens')      # the oscillation views' screenshots, kept for a person to look at
PLOTS = "() => [...document.querySelectorAll('.js-plotly-plot')].map(gd => gd.data.map(t => [t.type, t.yaxis || 'y']))"


@pytest.fixture(scope='module')
def tracked_run(tmp_path_factory, tiny_config):
    "Four epochs of 2-bit per-channel weights, oscillation tracked, at a learning rate where some weights oscillate."
    import torch
    torch.set_num_threads(1)
    from qvit_nb.train import train
    out = tmp_path_factory.mktemp('tracked')
    with contextlib.redirect_stdout(io.StringIO()):
        train(**{**tiny_config, 'mean': None, 'std': None, 'epochs': 4}, output=str(out), experiment='w2osc', lr=5e-3,
              wq_enable=True, wq_bitw=2, wq_per_channel=True, osc_momentum=0.1, track_oscillation=True,
              tricks='w2 tracked')
    return out / 'w2osc'


def test_oscillation_views_render_without_kernel(tracked_run, quantized_run, browser, tmp_path):
    """The standalone pages with the oscillation views: the run report's heat map (layer x epoch) and its curves (top-1
    and the oscillating share on a second y axis), the accuracy page's bars of the final share and its table column,
    and the activation page's weight view (weights in steps, oscillating ones overlaid, thresholds), whose layer select
    switches layers in the page. Screenshots in /tmp/osc_screens."""
    from qvit_nb.dashboard import activation_dashboard, run_report
    from qvit_nb.cli import main
    SCREENS.mkdir(parents=True, exist_ok=True)
    report = run_report(tracked_run).to_html(tmp_path / 'report.html')
    runs = tmp_path / 'runs'
    shutil.copytree(tracked_run, runs / 'w2osc'); shutil.copytree(quantized_run, runs / 'tiny')
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(['dashboard', str(runs), '--html', str(tmp_path / 'acc.html')]) == 0
    weights = activation_dashboard(tracked_run, checkpoint='last', weight_layer='blocks.0.attn.qkv').to_html(
        tmp_path / 'weights.html')
    page = browser.new_page()
    try:
        page.route('http*://**', lambda route: route.abort())   # nothing is fetched from the network
        page.goto(report.as_uri(), timeout=30_000)
        page.wait_for_selector('.js-plotly-plot .heatmaplayer image', timeout=30_000)     # the heat map is drawn
        plots = page.evaluate(PLOTS)
        assert [['heatmap', 'y']] in plots and [['scatter', 'y'], ['scatter', 'y2']] in plots, plots
        assert page.locator('.js-plotly-plot .y2tick').count() > 0                       # the second axis is drawn
        assert page.get_by_text('Weight oscillation').count() == 1
        page.screenshot(path=str(SCREENS / 'report.png'), full_page=True)
        for i, name in ((1, 'report-heatmap'), (2, 'report-curves')):
            page.locator('.js-plotly-plot').nth(i).screenshot(path=str(SCREENS / f'{name}.png'))

        page.goto((tmp_path / 'acc.html').as_uri(), timeout=30_000)
        page.wait_for_selector(BARS, timeout=30_000)
        assert page.evaluate(PLOTS)[2] == [['bar', 'y']]                                  # the oscillation bars
        assert page.locator('.js-plotly-plot').nth(2).locator('.xtick text').all_text_contents() == ['w2osc']
        assert 'Oscillating' in page.locator('table thead').inner_text()
        page.screenshot(path=str(SCREENS / 'accuracy.png'), full_page=True)

        page.goto(weights.as_uri(), timeout=30_000)
        page.wait_for_selector(BARS, timeout=30_000)
        title = "document.querySelector('#qvit-weights .gtitle').textContent"
        assert page.evaluate(title).startswith('blocks.0.attn.qkv: 2-bit weights')
        oscillating = "document.querySelectorAll('#qvit-weights .barlayer .trace.bars')[1].querySelectorAll('path')"
        assert page.evaluate(oscillating + '.length') > 0                                 # the overlaid trace is drawn
        page.screenshot(path=str(SCREENS / 'weights.png'), full_page=True)
        page.select_option('#qvit-weights-layer', 'blocks.1.mlp.fc2')
        page.wait_for_function(f"() => {title}.startsWith('blocks.1.mlp.fc2')", timeout=15_000)
        page.screenshot(path=str(SCREENS / 'weights-fc2.png'), full_page=True)
    finally: page.close()
