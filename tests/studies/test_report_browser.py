"""The report in a real browser: headless Chromium (Debian's ``chromium``) opens report.html
from disk; the table and the items render without console errors, a header sorts the table,
a click opens an item's larger view, and screenshots of both are saved.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (JSON
messages on file descriptors 3 and 4, each ended by a NUL byte), so nothing but the browser
is needed. Screenshots go to the test's temporary directory and are copied to
``/tmp/report_screenshots/`` (``summary.png``, ``item.png``, ``volume.png``).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from interpret_segmentation.studies.report import write_report
from interpret_segmentation.studies.runner import explain_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from oracles import PatchModel  # noqa: E402

SCREENSHOTS = Path("/tmp/report_screenshots")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser() -> str | None:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


pytestmark = pytest.mark.skipif(
    _browser() is None, reason="no chromium binary on PATH (Debian: apt-get install chromium; "
                               ".ci/run installs it)")


class Browser:
    """Headless Chromium with one page, driven by DevTools protocol commands over a pipe."""

    def __init__(self, profile: Path, width: int = 1400, height: int = 1000, timeout: float = 30,
                 startup: float = 180):
        # a first start on a fresh machine builds font and profile caches: it may take minutes
        self.timeout, self.next_id, self.events, self.buffer = startup, 0, [], b""
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()

        def pipes():  # in the child: the protocol's descriptors 3 (in) and 4 (out)
            high_in, high_out = os.dup(to_browser), os.dup(from_browser)
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)

        options = ["--headless=new", "--remote-debugging-pipe", "--disable-gpu",
                   "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                   "--disable-background-networking", "--disable-sync", "--mute-audio",
                   "--hide-scrollbars", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                   f"--window-size={width},{height}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            options.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self.process = subprocess.Popen([_browser(), *options, "about:blank"],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, preexec_fn=pipes,
                                        close_fds=False)
        os.close(to_browser)
        os.close(from_browser)
        try:
            targets = self.send("Target.getTargets")["targetInfos"]
            page = next(t["targetId"] for t in targets if t["type"] == "page")
            self.session = self.send("Target.attachToTarget", targetId=page,
                                     flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                self.send(f"{domain}.enable", session=True)
            self.send("Emulation.setDeviceMetricsOverride", session=True, width=width,
                      height=height, deviceScaleFactor=1, mobile=False)
            self.timeout = timeout
        except BaseException:
            self.close()
            raise

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, session: bool = False, **params) -> dict:
        """Run a protocol command (on the page's session when ``session``), return its result."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._message(deadline)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            if "method" in answer:
                self.events.append(answer)

    def wait_for(self, event: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            for index, seen in enumerate(self.events):
                if seen["method"] == event:
                    return self.events.pop(index)
            self.events.append(self._message(deadline))

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", session=True, expression=expression,
                           returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} raised {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.send("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired")

    def click(self, selector: str, index: int = 0) -> None:
        """A real mouse click (pressed and released) at the middle of an element."""
        box = self.evaluate(f"""(() => {{
            const e = document.querySelectorAll({json.dumps(selector)})[{index}];
            e.scrollIntoView({{block: "center"}}); const r = e.getBoundingClientRect();
            return [r.left + r.width / 2, r.top + r.height / 2]; }})()""")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", session=True, type=kind, x=box[0], y=box[1],
                      button="left", clickCount=1)

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", session=True, format="png",
                         captureBeyondViewport=False)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads the page reported so far."""
        try:  # collect what is in the pipe
            self.evaluate("0")
        except Exception:
            pass
        found = []
        for event in self.events:
            params = event.get("params", {})
            if event["method"] == "Runtime.exceptionThrown":
                found.append(json.dumps(params["exceptionDetails"])[:500])
            elif event["method"] == "Runtime.consoleAPICalled" and params["type"] in (
                    "error", "assert"):
                found.append(json.dumps(params["args"])[:500])
            elif event["method"] == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
        return found

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        for descriptor in (self._write, self._read):
            try:
                os.close(descriptor)
            except OSError:
                pass


def _keep(path: Path) -> None:
    """Copy a screenshot where the lead looks at them."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, SCREENSHOTS / path.name)


@pytest.fixture
def browser(tmp_path):
    chromium = Browser(tmp_path / "profile")
    try:
        yield chromium
    finally:
        chromium.close()


def _run(tmp_path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(3)
    for index, brightness in enumerate((0.9, 0.75, 0.6, 0.55, 0.8)):
        image = rng.random((48, 48)).astype(np.float32) * 0.4
        image[30:38, 30:38] = brightness
        np.save(data / f"scan_{index:02d}.npy", image)
    masks = tmp_path / "masks"
    masks.mkdir()
    for index in range(3):  # ground truth for three scans, a little off the model's box
        mask = np.zeros((48, 48), bool)
        mask[4 + index:14 + index, 6:16] = True
        np.save(masks / f"scan_{index:02d}.npy", mask)
    out = tmp_path / "run"
    explain_dataset(PatchModel(), data, {"hdm": {"circle_size": 9, "offset": 8},
                                         "rise": {"n_masks": 16}}, out, masks=masks,
                    progress=False, log=lambda *_: None)
    return out


def test_report_renders_sorts_and_opens_an_item(tmp_path, browser):
    out = _run(tmp_path)
    page = write_report(out, title="Five scans <PatchModel>")
    browser.open(page.as_uri())

    assert browser.evaluate("document.title") == "Five scans <PatchModel>"
    summary = browser.evaluate("""Array.from(document.querySelectorAll('#summary tbody tr'))
        .map(r => Array.from(r.cells).map(c => c.textContent))""")
    assert [row[:2] for row in summary] == [["hdm", "-"], ["rise", "0.2"], ["rise", "0.4"]]
    # every picture decoded and drawn: the first card's input, prediction and two maps
    first = browser.evaluate("""(() => { const c = document.querySelector('.card');
        const r = c.getBoundingClientRect();
        return {key: c.dataset.key, height: r.height, images: Array.from(c.querySelectorAll('img'))
        .map(i => [i.complete, i.naturalWidth, i.getBoundingClientRect().width])}; })()""")
    assert first["key"] == "scan_00" and first["height"] > 100
    assert [image[:2] for image in first["images"]] == [[True, 48]] * 4
    assert all(image[2] >= 100 for image in first["images"])
    assert browser.evaluate("document.querySelectorAll('.card').length") == 5
    summary_png = browser.screenshot(tmp_path / "summary.png")
    _keep(summary_png)

    # a click on a header sorts the table by that column, a second click reverses it
    def column(index):
        return browser.evaluate(f"""Array.from(document.querySelectorAll('#summary tbody tr'))
            .map(r => r.cells[{index}].dataset.value)""")
    browser.click("#summary th button", 3)  # perturbation ratio
    ratios = [float(v) if v else None for v in column(3)]
    assert ratios[:2] == sorted(ratios[:2]) and ratios[-1] is None  # missing values last
    browser.click("#summary th button", 3)
    again = [float(v) if v else None for v in column(3)]
    assert again[:2] == sorted(ratios[:2], reverse=True) and again[-1] is None
    assert browser.evaluate("document.querySelectorAll('#summary th')[3]"
                            ".getAttribute('aria-sort')") == "descending"
    browser.click("#summary th button", 0)
    assert column(0) == ["hdm", "rise", "rise"]

    # the grid sorted by a score: RISE's perturbation ratio at 0.2, descending
    options = browser.evaluate("Array.from(document.querySelectorAll('#sort-key option'))"
                               ".map(o => [o.value, o.textContent])")
    key = next(value for value, text in options if text == "rise: perturbation ratio @0.2")
    browser.evaluate(f"""(() => {{ const s = document.getElementById('sort-key');
        s.value = {json.dumps(key)}; s.dispatchEvent(new Event('change')); }})()""")
    browser.click("#sort-direction")
    order = browser.evaluate("Array.from(document.querySelectorAll('.card'))"
                             ".map(c => [c.dataset.key, JSON.parse(c.dataset.scores)"
                             f"[{json.dumps(key)}]])")
    values = [value for _, value in order]
    assert values == sorted(values, reverse=True) and len(set(values)) > 1

    # filtering by method hides HDM's panels
    browser.click('.run-filter[value="0"]')
    assert browser.evaluate("""Array.from(document.querySelectorAll('.card')[0]
        .querySelectorAll('.panel')).filter(p => p.offsetParent !== null)
        .map(p => p.textContent)""") == ["input + ground truth", "prediction", "rise"]
    browser.click('.run-filter[value="0"]')

    # a click on an item opens its larger view with all maps, its rows and its parameters
    clicked = browser.evaluate("document.querySelectorAll('.card')[1].dataset.key")
    browser.click(".card .panels", 1)
    view = browser.evaluate("""(() => { const d = document.getElementById('detail');
        return {open: d.open, title: document.getElementById('detail-title').textContent,
        maps: Array.from(d.querySelectorAll('.view')).map(v => [v.textContent,
        v.querySelector('img').naturalWidth]),
        rows: d.querySelectorAll('table.rows tbody tr').length,
        params: Array.from(d.querySelectorAll('.params h4')).map(h => h.textContent)}; })()""")
    assert view["open"] and view["title"] == clicked
    assert [m[0].split(" + ")[0] for m in view["maps"]] == ["input", "prediction", "hdm", "rise"]
    assert all(width == 48 for _, width in view["maps"])
    assert view["rows"] == 3 and view["params"] == ["hdm (hdm)", "rise (rise)"]
    _keep(browser.screenshot(tmp_path / "item.png"))
    browser.click("#next")
    assert browser.evaluate("document.getElementById('detail-title').textContent") != clicked
    browser.click("#close")
    assert browser.evaluate("document.getElementById('detail').open") is False

    assert browser.problems() == []
    assert (SCREENSHOTS / "summary.png").stat().st_size > 10_000


class CubeModel(nn.Module):
    """Volumes: the cube [2:7]^3 is foreground iff the patch [9:13]^3 is bright."""

    def forward(self, x):
        brightness = x[:, 0, 9:13, 9:13, 9:13].mean((1, 2, 3))
        out = torch.full((x.shape[0], 1, *x.shape[2:]), -10.0)
        out[:, :, 2:7, 2:7, 2:7] = ((brightness - 0.5) * 20)[:, None, None, None, None]
        return out


def test_volume_slider_moves_through_slices(tmp_path, browser):
    data = tmp_path / "volumes"
    data.mkdir()
    volume = np.random.default_rng(0).random((1, 16, 16, 16), np.float32) * 0.4
    volume[0, 9:13, 9:13, 9:13] = 1.0
    np.save(data / "cube.npy", volume)
    out = tmp_path / "run3d"
    explain_dataset(CubeModel(), data, {"hdm": {"circle_size": 9, "offset": 8},
                                        "rise": {"n_masks": 16}}, out, progress=False,
                    explainer_options={"spatial_dims": 3}, log=lambda *_: None)
    browser.open(write_report(out).as_uri())
    browser.click(".card")
    slider = browser.evaluate("""(() => { const r = document.querySelector('#detail .slider input');
        return {max: r.max, value: r.value, z: JSON.parse(r.dataset.z),
        output: document.querySelector('#detail .slider output').textContent}; })()""")
    assert slider["z"] == [2, 3, 4, 5, 6]  # the target's slices
    assert slider["output"] == f"z = {slider['z'][int(slider['value'])]} of 16"

    def shown():
        return browser.evaluate("""Array.from(document.querySelectorAll('#detail .stack'))
            .map(s => Array.from(s.querySelectorAll('img')).filter(i => !i.hidden)
            .map(i => i.dataset.slice))""")
    assert shown() == [[slider["value"]]] * 4
    browser.evaluate("""(() => { const r = document.querySelector('#detail .slider input');
        r.value = '0'; r.dispatchEvent(new Event('input')); })()""")
    assert shown() == [["0"]] * 4
    assert browser.evaluate("document.querySelector('#detail .slider output').textContent") \
        == "z = 2 of 16"
    _keep(browser.screenshot(tmp_path / "volume.png"))
    assert browser.problems() == []
