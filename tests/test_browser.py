"""JupyterLab in a real browser: notebook 05 runs in smoke mode, draws its figures, and its explorer
widget responds.

Starts JupyterLab on 127.0.0.1 with a token, drives Debian's headless Chromium through Playwright
(``executable_path="/usr/bin/chromium"``: Playwright's own browser download is not reachable here),
runs every cell, checks that the figures are drawn as images (not ``<Figure size ...>`` text) and
the run summaries as tables, waits for the explorer's images, changes the explanation method and
checks that the heatmap image changes. Bounded in time; the server and its kernels are always stopped, and the
test fails if any of their processes is left behind.

Then it measures the explorer end to end: for several methods, updates that compute a heatmap
("cold": the next image) and updates served from the cache ("cached": another class, another
alpha), each timed in the page from the control's event to the ``load`` of the new heatmap image,
beside the kernel's own time for the same updates (``explorer.timings``, read through the kernel).
Median and 95th percentile of each go to ``bench/explorer_browser.json`` under
``LEPTON_NB_REPORTS`` (or to ``LEPTON_NB_BROWSER_JSON``), which ``benchmarks/bench_explain.py``
reads. The notebook runs in smoke mode: the model is a one-epoch copy of the explained CNN
(the same architecture, so the same cost per update), and the methods' sample counts are smoke's.
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

import json
import statistics

import pytest
from conftest import CHROMIUM, require

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "05_interpretability.ipynb"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]

pytestmark = [pytest.mark.timeout(900)]

#: methods timed in the browser (cheap ones, whose cost does not depend on the mode) and one black-box
TIMED_METHODS = ("gradcam", "hirescam", "integrated_gradients", "vanilla_gradients")
SLOW_METHOD = "rise"
COLD, CACHED = 5, 6

# Arms a timer: t0 at the first control event (key, pointer, input, change) in the page, t1 at the
# load of the next image put into ``img``; window.__done resolves to t1 - t0 in milliseconds.
ARM = """(img) => {
    window.__t0 = null;
    const events = ['keydown', 'pointerdown', 'input', 'change'];
    const start = () => { if (window.__t0 === null) window.__t0 = performance.now(); };
    events.forEach((e) => document.addEventListener(e, start, {capture: true}));
    window.__done = new Promise((resolve) => {
        const obs = new MutationObserver(() => {
            obs.disconnect();
            img.addEventListener('load', () => {
                events.forEach((e) => document.removeEventListener(e, start, {capture: true}));
                resolve(performance.now() - window.__t0);
            }, {once: true});
        });
        obs.observe(img, {attributes: true, attributeFilter: ['src']});
    });
}"""

# Runs code in the notebook's kernel and returns what it printed.
KERNEL_PRINT = """async (code) => {
    const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
    const future = kernel.requestExecute({code});
    let out = '';
    future.onIOPub = (msg) => { if (msg.header.msg_type === 'stream') out += msg.content.text; };
    await Promise.race([future.done, new Promise((_, no) => setTimeout(
        () => no(new Error('the kernel did not answer within 120 s (status ' + kernel.status + ')')), 120000))]);
    return out;
}"""

#: The notebook's run is over: its kernel idle and no code cell queued or running (JupyterLab marks both
#: "running" in the cell model, rendered or not).
NOTEBOOK_DONE = """() => {
    const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
    return !!(k && w.content) && k.status === 'idle'
        && w.content.widgets.every(c => c.model.type !== 'code' || c.model.executionState !== 'running');
}"""
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


def _explorer_only(path: Path) -> None:
    """Notebook 05 cut down to what the explorer needs: set-up, parameters, the model, the explorer."""
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    keep = ("colab-setup", "parameters")
    nb.cells = [c for c in nb.cells if c.cell_type == "code" and (
        set(keep) & set(c.metadata.get("tags", [])) or "run = ln.training.train(build" in c.source
        or c.source.startswith("explorer = "))]
    assert len(nb.cells) == 4, "notebook 05 no longer has the cells the latency measurement needs"
    nbformat.write(nb, path)


@pytest.fixture()
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving a copy of notebook 05; yields (url, token)."""
    yield from _serve(tmp_path, lambda work: shutil.copy(NOTEBOOK, work))


@pytest.fixture()
def explorer_lab(tmp_path):
    """The same server serving only notebook 05's explorer (for benchmarks/bench_explain.py)."""
    yield from _serve(tmp_path, lambda work: _explorer_only(work / NOTEBOOK.name))


def _serve(tmp_path, put_notebook):
    require(CHROMIUM, "apt-get install chromium (the browser this test drives)")
    import portpicker
    import psutil

    work = tmp_path / "notebooks"
    work.mkdir()
    put_notebook(work)  # a copy: JupyterLab autosaves outputs, keep them out of the repository
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


def _open(pw, base: str, token: str, snapshot_children):
    browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
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
    overlay = images.nth(1)
    page.wait_for_function("(img) => img.src && img.naturalWidth > 0", arg=overlay.element_handle(), timeout=60_000)
    # every cell finished: the kernel handles a widget's event only after the cells queued before it,
    # so on a loaded machine the cells after the explorer's would be timed as the widget's response
    page.wait_for_function(NOTEBOOK_DONE, timeout=900_000, polling=1000)
    return browser, page, overlay


def test_explorer_renders_and_responds_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    base, token, snapshot_children = lab
    with sync_playwright() as pw:
        browser, page, overlay = _open(pw, base, token, snapshot_children)
        try:
            notebook_text = page.locator(".jp-Notebook").inner_text()
            assert "Traceback (most recent call last)" not in notebook_text
            assert "<Figure size" not in notebook_text, "a figure is shown as text, not drawn"
            figures = page.locator(".jp-OutputArea .jp-RenderedImage img")
            assert figures.count() >= 5, f"only {figures.count()} figures rendered as images in the notebook"
            drawn = figures.evaluate_all("(imgs) => imgs.filter(i => i.complete && i.naturalWidth > 100).length")
            assert drawn == figures.count(), f"{figures.count() - drawn} figure images did not load"
            assert page.locator(".jp-OutputArea .jp-RenderedMarkdown table").count() >= 1, \
                "run summaries are not shown as tables"
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
            _measure_latency(page, overlay)
        finally:
            browser.close()


@pytest.mark.skipif(os.environ.get("LEPTON_NB_BROWSER_BENCH") != "1",
                    reason="the explorer-only latency run of benchmarks/bench_explain.py (LEPTON_NB_BROWSER_BENCH=1)")
def test_explorer_latency_only(explorer_lab):
    from playwright.sync_api import sync_playwright

    base, token, snapshot_children = explorer_lab
    with sync_playwright() as pw:
        browser, page, overlay = _open(pw, base, token, snapshot_children)
        try:
            assert "Traceback (most recent call last)" not in page.locator(".jp-Notebook").inner_text()
            _measure_latency(page, overlay)
        finally:
            browser.close()


def _control(page, label: str, kind: str):
    return page.locator(f".widget-{kind}", has=page.locator("label", has_text=label))


def _settle(overlay, quiet_ms: int = 500, timeout_s: float = 60) -> None:
    """Wait until the heatmap's src has not changed for ``quiet_ms``: an image of an earlier update that
    reaches the browser late would otherwise be timed as the next control event's response."""
    deadline, last = time.monotonic() + timeout_s, overlay.get_attribute("src")
    while time.monotonic() < deadline:
        overlay.page.wait_for_timeout(quiet_ms)
        now = overlay.get_attribute("src")
        if now == last:
            return
        last = now
    raise AssertionError(f"the heatmap kept changing for {timeout_s:.0f} s without a control event")


def _timed(page, overlay, action, timeout_ms: float = 120_000) -> float:
    """Milliseconds from the control event that ``action()`` causes to the next heatmap image drawn."""
    overlay.evaluate(ARM)
    action()
    return float(page.evaluate(f"Promise.race([window.__done, new Promise((_, no) => setTimeout("
                               f"() => no(new Error('no new heatmap image within {timeout_ms:.0f} ms')), {timeout_ms}))])"))


def _stats(values) -> dict:
    v = sorted(values)
    return {"median": statistics.median(v), "p95": v[min(len(v) - 1, round(0.95 * (len(v) - 1)))], "n": len(v)}


def _measure_latency(page, overlay) -> None:
    method = _control(page, "method", "dropdown").locator("select")
    slider = _control(page, "image", "slider").locator(".noUi-handle")
    alpha = _control(page, "alpha", "slider").locator(".noUi-handle")
    last = "import json; print(json.dumps([len(explorer.timings), explorer.timings[-1]]))"
    samples, direction = [], "ArrowRight"

    def sample(m: str, kind: str, key: str) -> None:
        before = json.loads(page.evaluate(KERNEL_PRINT, last))[0]  # after every update queued before it
        _settle(overlay)  # and their images drawn
        ms = _timed(page, overlay, lambda: page.keyboard.press(key))
        count, k = json.loads(page.evaluate(KERNEL_PRINT, last))  # runs after the update has finished
        assert count == before + 1 and k["method"] == m, f"one kernel update of {m} per key press, got {count - before}: {k}"
        # the kernel knows whether it computed (an image this method showed before comes from the cache)
        samples.append({"method": m, "kind": k["kind"], "planned": kind, "ms": ms, "kernel_ms": k["ms"]})

    for m in (*TIMED_METHODS, SLOW_METHOD):
        if method.input_value() != m:  # the switch's own update, drawn before timing starts
            _timed(page, overlay, lambda: method.select_option(m))
        n_cold, n_cached = (COLD, CACHED) if m != SLOW_METHOD else (2, 2)
        slider.focus()
        for _ in range(n_cold):  # the next image, not seen with this method: its maps are computed
            sample(m, "cold", direction)
        alpha.focus()
        for k in range(n_cached):  # another alpha for the same image: its maps come from the cache
            sample(m, "cached", "ArrowLeft" if k % 2 == 0 else "ArrowRight")
        direction = "ArrowLeft" if direction == "ArrowRight" else "ArrowRight"
    for m in (*TIMED_METHODS, SLOW_METHOD):
        assert any(s_["method"] == m and s_["kind"] == "cold" for s_ in samples), f"no cold update of {m} timed"
    fast = [s_ for s_ in samples if s_["method"] != SLOW_METHOD]
    result = {
        "what": "explorer update latency: browser = control event to the new heatmap image loaded in Chromium; "
                "kernel = Explorer.update (compute, PNG encoding, widget values set) for the same updates",
        "notebook_mode": "smoke", "methods_timed": list(TIMED_METHODS), "slow_method": SLOW_METHOD,
        "browser_ms": {kind: _stats([s_["ms"] for s_ in fast if kind in ("all", s_["kind"])])
                       for kind in ("cold", "cached", "all")},
        "kernel_ms": {kind: _stats([s_["kernel_ms"] for s_ in fast if kind in ("all", s_["kind"])])
                      for kind in ("cold", "cached", "all")},
        "cold_median_ms_by_method": {m: {where: statistics.median([s_[key] for s_ in samples if s_["method"] == m
                                                                    and s_["kind"] == "cold"])
                                         for where, key in (("browser", "ms"), ("kernel", "kernel_ms"))}
                                     for m in (*TIMED_METHODS, SLOW_METHOD)},
        "samples": samples,
    }
    out = Path(os.environ.get("LEPTON_NB_BROWSER_JSON") or
               Path(os.environ.get("LEPTON_NB_REPORTS", "reports")) / "bench" / "explorer_browser.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    # the browser adds the comm round trip and the image decoding to the kernel's time, never less
    assert result["browser_ms"]["all"]["median"] >= result["kernel_ms"]["all"]["median"]
