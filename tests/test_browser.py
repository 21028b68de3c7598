"""JupyterLab in a real browser: notebook 05 runs in smoke mode, draws its figures, and its explorer
widget responds.

Starts JupyterLab on 127.0.0.1 with a token, drives Debian's headless Chromium through Playwright
(``executable_path="/usr/bin/chromium"``: Playwright's own browser download is not reachable here),
runs every cell, checks that the figures are drawn as images (not ``<Figure size ...>`` text) and
the run summaries as tables, waits for the explorer's images, changes the explanation method and
checks that the heatmap image changes. Bounded in time; the server and its kernels are always stopped, and the
test fails if any of their processes is left behind.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import CHROMIUM, require

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "05_interpretability.ipynb"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]

pytestmark = [pytest.mark.timeout(900)]

# Hash of what an <img>'s src points at (blob: URLs change on every update, contents may not).
IMG_DIGEST = """async (img) => {
    const buf = await (await fetch(img.src)).arrayBuffer();
    const d = await crypto.subtle.digest('SHA-256', buf);
    return Array.from(new Uint8Array(d)).map(b => b.toString(16).padStart(2, '0')).join('');
}"""


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"jupyter lab did not answer {url} within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture()
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving a copy of notebook 05; yields (url, token)."""
    require(CHROMIUM, "apt-get install chromium (the browser this test drives)")
    import portpicker
    import psutil

    work = tmp_path / "notebooks"
    work.mkdir()
    shutil.copy(NOTEBOOK, work)  # JupyterLab autosaves outputs: keep them out of the repository
    port, token = portpicker.pick_unused_port(), secrets.token_hex(16)
    env = {**os.environ, "LEPTON_NB_SMOKE": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
           "LEPTON_NB_REPORTS": str(tmp_path / "reports"), "JUPYTER_CONFIG_DIR": str(tmp_path / "jcfg"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jrt"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws"), "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings")}
    # JupyterLab 4 attaches only the cells near the viewport ("windowing"); render them all so the
    # figures above the explorer are in the page to be checked.
    tracker = tmp_path / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text('{"windowingMode": "none"}')
    log = tmp_path / "lab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
           "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"] + (["--allow-root"] if os.geteuid() == 0 else [])
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = psutil.Process(proc.pid)
    seen: set[psutil.Process] = set()
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/status?token={token}", proc, log)
        yield f"http://127.0.0.1:{port}", token, lambda: seen.update(server.children(recursive=True))
    finally:
        try:
            seen.update(server.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
        proc.send_signal(signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        _, alive = psutil.wait_procs(list(seen), timeout=15)
        for p in alive:
            p.kill()
        assert not alive, f"processes left behind by jupyter lab: {[p.pid for p in alive]}"


def test_explorer_renders_and_responds_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    base, token, snapshot_children = lab
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}", timeout=120_000)
            page.wait_for_function(
                "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                " return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
                " && w.sessionContext.session.kernel.connectionStatus === 'connected'); }",
                timeout=180_000)
            snapshot_children()
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            images = page.locator(".jp-OutputArea-output img.widget-image")
            images.nth(1).wait_for(state="visible", timeout=600_000)  # image + heatmap overlay of the explorer
            snapshot_children()
            notebook_text = page.locator(".jp-Notebook").inner_text()
            assert "Traceback (most recent call last)" not in notebook_text
            assert "<Figure size" not in notebook_text, "a figure is shown as text, not drawn"
            figures = page.locator(".jp-OutputArea .jp-RenderedImage img")
            assert figures.count() >= 5, f"only {figures.count()} figures rendered as images in the notebook"
            drawn = figures.evaluate_all("(imgs) => imgs.filter(i => i.complete && i.naturalWidth > 100).length")
            assert drawn == figures.count(), f"{figures.count() - drawn} figure images did not load"
            assert page.locator(".jp-OutputArea .jp-RenderedMarkdown table").count() >= 1, \
                "run summaries are not shown as tables"
            overlay = images.nth(1)
            page.wait_for_function("(img) => img.src && img.naturalWidth > 0", arg=overlay.element_handle(),
                                   timeout=60_000)
            before = overlay.evaluate(IMG_DIGEST)

            method = page.locator(".widget-dropdown", has=page.locator("label", has_text="method")).locator("select")
            options = method.locator("option").all_inner_texts()
            current = method.input_value()
            method.select_option(next(o for o in options if o != current))

            deadline, after = time.monotonic() + 120, before
            while after == before and time.monotonic() < deadline:
                page.wait_for_timeout(500)
                after = overlay.evaluate(IMG_DIGEST)
            assert after != before, "the heatmap did not change after choosing another method"
            page.screenshot(path=str(Path(os.environ.get("LEPTON_NB_REPORTS", ".")) / "browser_explorer.png"))
        finally:
            browser.close()
