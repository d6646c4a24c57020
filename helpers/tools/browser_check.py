"""The explorer (notebook 09) in a real browser: start JupyterLab on loopback, open the notebook
in headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by selenium), run
every cell, change a control, and check that the view changed. Screenshots before and after go
to ``figures/<profile>/screens/``.

    python -m helpers.tools.browser_check --profile cpu      # make browser-check

Needs the profile's baseline (notebook 01) and, on a fresh Debian machine,
``apt-get install chromium chromium-driver``. Not part of ``make test``: CI has neither the
browser nor the cpu baseline.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from ..core import config
from ..core.vocabulary import RANDOM

NOTEBOOK = "notebooks/09_explorer.ipynb"
SUMMARY = ".widget-output .jp-OutputArea-output pre"  # the explorer's one-line summary


class BrowserCheckError(RuntimeError):
    """The browser check could not run or the explorer did not answer (the message says which)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SETTINGS = {  # JupyterLab user settings: never autosave (nothing is written back), no news pop-up
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}


def workspace() -> Path:
    """A temporary folder holding a copy of the explorer notebook and the settings above: the
    browser works on the copy, so the repository's notebook and its stored outputs stay untouched."""
    root = Path(tempfile.mkdtemp(prefix="browser_check_"))
    shutil.copy(config.REPO_ROOT / NOTEBOOK, root / Path(NOTEBOOK).name)
    for name, value in SETTINGS.items():
        (root / "settings" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "settings" / name).write_text(json.dumps(value))
    return root


def start_lab(port: int, token: str, root: Path, log: Path) -> subprocess.Popen:
    """JupyterLab on 127.0.0.1:``port`` serving ``root``, the app exposed to scripts."""
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--ServerApp.port={port}",
           "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           f"--LabApp.user_settings_dir={root / 'settings'}", f"--LabApp.workspaces_dir={root / 'workspaces'}",
           "--LabApp.expose_app_in_browser=True", "--ServerApp.open_browser=False"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers run as root
    lab = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=os.environ.copy())
    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
            return lab
        except OSError:
            if lab.poll() is not None:
                raise BrowserCheckError(f"JupyterLab exited (code {lab.returncode}); see {log}")
            time.sleep(1)
    lab.terminate()
    raise BrowserCheckError(f"JupyterLab did not answer on port {port} within 2 minutes; see {log}")


def browser():
    """Headless Chromium through the system's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    chrome, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chrome and driver):
        raise BrowserCheckError("chromium and chromedriver are needed: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,1100"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def wait_text(driver, css: str, timeout: float, differs_from: str | None = None) -> str:
    """The text of the last element matching ``css`` once it exists (and differs from ``differs_from``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = driver.find_elements("css selector", css)
        text = found[-1].text if found else ""
        if text and "answered in" in text and text != differs_from:
            return text
        time.sleep(0.5)
    raise BrowserCheckError(f"no {'new ' if differs_from else ''}explorer output ({css}) within {timeout:.0f} s")


def check(profile: str, timeout: float = 600) -> dict:
    """Run the explorer in the browser, change the criterion, return both summaries and the
    screenshot paths; raise :class:`BrowserCheckError` if the view did not change."""
    from selenium.webdriver.support.ui import Select
    out = config.get_profile(profile).figures / "screens"
    out.mkdir(parents=True, exist_ok=True)
    port, token, root = free_port(), secrets.token_hex(16), workspace()
    os.environ[config.PROFILE_ENV] = profile
    lab = start_lab(port, token, root, out / "jupyterlab.log")
    driver = None
    try:
        driver = browser()
        driver.get(f"http://127.0.0.1:{port}/lab/tree/{Path(NOTEBOOK).name}?token={token}")
        _wait_kernel(driver, "idle", 120)
        driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        before = wait_text(driver, SUMMARY, timeout)
        _screenshot(driver, out / "explorer_before.png")
        criterion = driver.find_elements("css selector", ".widget-dropdown select")[0]
        Select(criterion).select_by_visible_text(RANDOM)
        after = wait_text(driver, SUMMARY, 120, differs_from=before)
        _screenshot(driver, out / "explorer_after.png")
        return {"before": before, "after": after, "screens": [out / "explorer_before.png", out / "explorer_after.png"]}
    finally:
        if driver is not None:
            driver.quit()
        lab.terminate()
        lab.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def _screenshot(driver, path: Path) -> None:
    """Once the kernel is idle (the figure drawn), the explorer's widgets scrolled into view."""
    _wait_kernel(driver, "idle", 120)
    drawn = ("const i = [...document.querySelectorAll('.widget-output img')];"
             "return i.length > 0 && i.every(x => x.complete && x.naturalWidth > 0);")
    deadline = time.monotonic() + 60
    while not driver.execute_script(drawn) and time.monotonic() < deadline:
        time.sleep(0.5)
    driver.execute_script("const w = document.querySelectorAll('.widget-vbox');"
                          "if (w.length) w[w.length - 1].scrollIntoView();")
    time.sleep(2)
    driver.save_screenshot(str(path))


def _wait_kernel(driver, status: str, timeout: float) -> None:
    """Until the open notebook's kernel reports ``status``."""
    deadline = time.monotonic() + timeout
    script = ("const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
              "const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
              "return k ? k.status : '';")
    while time.monotonic() < deadline:
        if driver.execute_script(script) == status:
            return
        time.sleep(1)
    raise BrowserCheckError(f"the notebook's kernel was not {status} within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default=config.DEFAULT_PROFILE, choices=list(config.PROFILES))
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for the first view")
    args = ap.parse_args(argv)
    try:
        result = check(args.profile, args.timeout)
    except BrowserCheckError as err:
        print(f"browser check failed: {err}", file=sys.stderr)
        return 1
    print(f"before: {result['before']}\nafter (criterion random): {result['after']}")
    print("screenshots: " + ", ".join(str(p.relative_to(config.REPO_ROOT)) for p in result["screens"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
