"""`make browser-check`: the course site and the notebooks in a real headless browser (Chromium). Not a test.

What a tutor sees, checked in Debian's ``chromium`` driven by playwright (``apt-get install chromium``;
``pip install playwright``; playwright's own browser download is not used). Screenshots go to ``--out``
(default ``build/browser/``); each check prints PASS or FAIL, and the exit status is 1 if any failed.

* ``site``: ``build/site/index.html`` (``make site``) and every notebook page open; every ``<img>`` has loaded
  (``naturalWidth > 0``), each notebook page shows at least one figure, and no page shows a widget's raw
  text (``VBox(children=``). Requests off the local disk are refused (the site must work offline).
* ``lab``: JupyterLab on a temporary copy of ``notebooks/`` (nothing is written into the repository; its
  own notary, settings and workspaces, so every notebook is untrusted as in a fresh clone):

  - ``lab-03-committed``: notebook 03 as committed; its widget-browser cell must show a static figure and the
    one-line hint "run the cells above", not ``VBox(children=``. A notebook executed before
    :class:`arml.viz.pseudo.PseudoMaskBrowser` existed fails here until it is re-executed;
  - ``lab-03-executed``: the same for a copy of 03 executed now with papermill on the ``quick`` profile
    (``--executed-03`` to reuse one);
  - ``lab-03-live``: that copy's cells run in the browser; the slider appears, and moving it changes the
    image (screenshots of the widget before and after differ);
  - ``lab-unmodified``: each committed notebook opens, its kernel starts, and after an autosave interval (set
    to 2 s) it is neither marked modified nor rewritten on disk; its kernelspec is the installed ``python3``.

    python benchmarks/browser_check.py --site build/site --out build/browser
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
RAW_WIDGET = "VBox(children="
HINT = "run the cells above"
BROWSER_CELL = "pseudo_mask_browser("
NB03 = "03_pseudo_mask_quality.ipynb"
CURRENT = ".jp-NotebookPanel:not(.lm-mod-hidden)"
RESULTS: list[tuple[str, bool, str]] = []


def report(name: str, ok: bool, detail: str = "") -> bool:
    RESULTS.append((name, ok, detail))
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)
    return ok


def check_site(browser, site: Path, out: Path) -> None:
    """Open the contents page and each notebook page; figures loaded, no raw widget text."""
    index = site / "index.html"
    if not index.is_file():
        report("site", False, f"{index} missing: run `make site` first")
        return
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.route(
        "**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort()
    )
    page.goto(index.as_uri())
    links = page.eval_on_selector_all("ol.toc a", "els => els.map(a => a.getAttribute('href'))")
    page.screenshot(path=str(out / "site_index.png"))
    pages = [h for h in links if h.startswith("notebooks/") and "#" not in h]
    report("site-index", len(pages) > 0, f"{len(links)} links, {len(pages)} notebook pages")
    for href in pages:
        name = Path(href).stem
        page.goto((site / href).as_uri(), wait_until="load")
        images = page.eval_on_selector_all("img", "els => els.map(i => [i.complete, i.naturalWidth])")
        broken = sum(1 for complete, width in images if not (complete and width > 0))
        raw = RAW_WIDGET in page.inner_text("body")
        page.screenshot(path=str(out / f"site_{name}.png"))
        hint = page.locator(".jp-Cell", has_text=HINT)
        if hint.count():
            hint.last.screenshot(path=str(out / f"site_{name}_widget.png"))
        ok = len(images) > 0 and broken == 0 and not raw
        detail = f"{len(images)} images, {broken} not rendered" + (
            f", shows raw `{RAW_WIDGET}`" if raw else ""
        )
        report(f"site-{name}", ok, detail)
    page.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(root: Path, state: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """JupyterLab on ``root`` with its own notary, settings (autosave 2 s, no windowing) and workspaces."""
    settings = state / "settings"
    (settings / "@jupyterlab" / "docmanager-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings").write_text(
        '{"autosaveInterval": 2}'
    )
    (settings / "@jupyterlab/notebook-extension/tracker.jupyterlab-settings").write_text(
        '{"windowingMode": "none"}'
    )
    (state / "notary").mkdir()
    port = free_port()
    command = [
        str(BIN / "jupyter"),
        "lab",
        "--no-browser",
        f"--port={port}",
        "--IdentityProvider.token=",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={state / 'workspaces'}",
        f"--NotebookNotary.data_dir={state / 'notary'}",
    ] + (["--allow-root"] if os.geteuid() == 0 else [])
    log = open(state / "lab.log", "w")  # noqa: SIM115 (closed with the process)
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=2)
            return server, url
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.5)
    server.terminate()
    raise RuntimeError(f"JupyterLab did not start; see {state / 'lab.log'}")


def open_notebook(page, url: str, name: str) -> None:
    """Open ``name`` alone (``?reset``: no tabs restored from the workspace) and wait for its idle kernel."""
    page.goto(f"{url}/lab/tree/{name}?reset", wait_until="domcontentloaded")
    page.wait_for_function(
        "name => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " const k = w && w.context && w.context.path === name && w.context.isReady && w.sessionContext"
        " && w.sessionContext.session && w.sessionContext.session.kernel;"
        " return k && k.status === 'idle' && w.content.widgets.length > 0; }",
        arg=name,
        timeout=120_000,
    )
    page.wait_for_selector(f"{CURRENT} .jp-Cell", timeout=60_000)


def browser_cell(page):
    cells = page.locator(f"{CURRENT} .jp-Cell")
    for i in range(cells.count()):
        cell = cells.nth(i)
        if BROWSER_CELL in cell.locator(".jp-InputArea").inner_text():
            return cell
    raise RuntimeError(f"no cell calling {BROWSER_CELL} in the notebook")


def check_static_widget(page, url: str, name: str, check: str, out: Path) -> None:
    """The widget-browser cell of an untrusted notebook: a static figure and the hint, no raw widget text."""
    open_notebook(page, url, name)
    cell = browser_cell(page)
    cell.scroll_into_view_if_needed()
    output = cell.locator(".jp-OutputArea")
    text = output.inner_text()
    figures = output.locator("img").evaluate_all("els => els.filter(i => i.naturalWidth > 0).length")
    output.screenshot(path=str(out / f"{check}.png"))
    page.screenshot(path=str(out / f"{check}_page.png"))
    ok = HINT in text and RAW_WIDGET not in text and figures > 0
    shown = " | ".join(line[:90] for line in text.strip().splitlines()) or "(nothing)"
    report(check.replace("_", "-"), ok, f"{figures} figure(s); output text: {shown}")


def check_live_widget(page, url: str, name: str, out: Path, timeout_s: int) -> None:
    """Run the notebook in the browser; the slider appears; moving it changes the image."""
    open_notebook(page, url, name)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    cell = browser_cell(page)
    slider = cell.locator(".widget-slider .noUi-target")
    image = cell.locator("img.widget-image")
    try:
        image.wait_for(timeout=timeout_s * 1000)
        page.wait_for_function("el => el.naturalWidth > 0", arg=image.element_handle(), timeout=60_000)
    except Exception as error:  # noqa: BLE001 (reported, with a screenshot)
        page.screenshot(path=str(out / "lab_03_live_timeout.png"))
        report("lab-03-live", False, f"no live widget after {timeout_s} s: {type(error).__name__}")
        return
    widget = cell.locator(".jupyter-widgets.widget-vbox")
    widget.scroll_into_view_if_needed()
    before_src = image.get_attribute("src")
    before = widget.screenshot(path=str(out / "lab_03_live_before.png"))
    box = slider.bounding_box()
    page.mouse.click(box["x"] + 0.7 * box["width"], box["y"] + box["height"] / 2)
    try:
        page.wait_for_function(
            "([el, src]) => el.getAttribute('src') !== src",
            arg=[image.element_handle(), before_src],
            timeout=60_000,
        )
        page.wait_for_function(
            "el => el.complete && el.naturalWidth > 0", arg=image.element_handle(), timeout=30_000
        )
    except Exception:  # noqa: BLE001 (the comparison below reports it)
        pass
    readout = cell.locator(".widget-readout").inner_text().strip()
    after = widget.screenshot(path=str(out / "lab_03_live_after.png"))
    changed = hashlib.sha256(before).digest() != hashlib.sha256(after).digest()
    report(
        "lab-03-live",
        changed and readout not in ("", "0"),
        f"slider moved to {readout}; widget image changed: {changed}",
    )


def json_changes(old: object, new: object, where: str = "") -> list[str]:
    """Where two notebooks' JSON differ, e.g. ``metadata.language_info.version: None -> '3.11.7'``."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [c for k in keys for c in json_changes(old.get(k), new.get(k), f"{where}.{k}".lstrip("."))]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            c
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            for c in json_changes(a, b, f"{where}[{i}]")
        ]
    return [] if old == new else [f"{where}: {str(old)[:40]!r} -> {str(new)[:40]!r}"]


def check_unmodified(page, url: str, root: Path, names: list[str], out: Path) -> None:
    """Each committed notebook opens without becoming modified or being rewritten by autosave."""
    specs = json.loads(
        subprocess.run(
            [str(BIN / "jupyter"), "kernelspec", "list", "--json"], capture_output=True, text=True, check=True
        ).stdout
    )
    installed = specs["kernelspecs"]["python3"]["spec"]["display_name"]
    for name in names:
        path = root / name
        before = path.read_bytes()
        kernelspec = json.loads(before)["metadata"].get("kernelspec", {})
        open_notebook(page, url, name)
        time.sleep(5)  # past two autosave intervals (2 s)
        dirty = page.evaluate("() => window.jupyterapp.shell.currentWidget.context.model.dirty")
        after = path.read_bytes()
        changes = json_changes(json.loads(before), json.loads(after)) if after != before else []
        rewritten = after != before
        spec_ok = kernelspec.get("name") == "python3" and kernelspec.get("display_name") == installed
        ok = not dirty and not rewritten and spec_ok
        report(
            f"lab-unmodified-{Path(name).stem}",
            ok,
            f"modified={dirty}, rewritten on disk={rewritten} {changes[:3]}, kernelspec={kernelspec.get('name')!r}/{kernelspec.get('display_name')!r} (installed {installed!r})",
        )
        if not ok:
            page.screenshot(path=str(out / f"lab_modified_{Path(name).stem}.png"))
        page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")


def execute_03(work: Path, env: dict[str, str]) -> Path:
    """Notebook 03 executed now by papermill on the quick profile, outputs outside the repository."""
    target = work / "executed" / NB03
    target.parent.mkdir(parents=True)
    command = [
        str(BIN / "papermill"),
        str(REPO / "notebooks" / NB03),
        str(target),
        "-p",
        "PROFILE",
        "quick",
        "--cwd",
        str(REPO / "notebooks"),
    ]
    subprocess.run(command, env=env, check=True, capture_output=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, default=REPO / "build" / "site", help="the site of `make site`")
    parser.add_argument(
        "--notebooks", type=Path, default=REPO / "notebooks", help="notebooks to open in JupyterLab"
    )
    parser.add_argument(
        "--executed-03",
        type=Path,
        help="a quick-profile execution of notebook 03 (default: run papermill now)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "build" / "browser", help="screenshots")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument(
        "--live-timeout", type=int, default=420, help="seconds for notebook 03 to run in the browser"
    )
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["site", "lab", "live"], help="checks to leave out"
    )
    args = parser.parse_args(argv)
    args.site, args.out = args.site.resolve(), args.out.resolve()  # file:// URIs need absolute paths
    if not Path(CHROMIUM).exists():
        print(f"FAIL  setup: {CHROMIUM} missing (apt-get install chromium)")
        return 1
    from playwright.sync_api import sync_playwright

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the JupyterLab server on the way out
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.png"):
        old.unlink()
    work = args.work or Path(tempfile.mkdtemp(prefix="arml-browser-"))
    env = {**os.environ, **{f"ARML_{k}": str(work / k.lower()) for k in ("RESULTS", "FIGURES")}}
    env.setdefault("ARML_RUNS", str(work / "runs"))
    server = None
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            if "site" not in args.skip:
                check_site(browser, args.site, args.out)
            if "lab" not in args.skip:
                root = work / "lab"
                shutil.copytree(args.notebooks, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
                names = sorted(p.name for p in root.glob("*.ipynb"))
                executed = args.executed_03 or execute_03(work, env)
                shutil.copy(executed, root / "03_executed.ipynb")
                server, url = start_lab(root, work / "lab-state", env)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                check_unmodified(page, url, root, names, args.out)
                check_static_widget(page, url, NB03, "lab_03_committed", args.out)
                check_static_widget(page, url, "03_executed.ipynb", "lab_03_executed", args.out)
                if "live" not in args.skip:
                    check_live_widget(page, url, "03_executed.ipynb", args.out, args.live_timeout)
            browser.close()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    failed = [name for name, ok, _ in RESULTS if not ok]
    print(
        f"\n{len(RESULTS) - len(failed)}/{len(RESULTS)} checks passed in {time.perf_counter() - start:.0f} s; screenshots in {args.out}"
    )
    if failed:
        print("FAILED: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
