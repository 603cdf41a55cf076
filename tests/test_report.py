"""The run report: written by a real `train`, rebuilt by `cnncompile report`, opened by a real browser."""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from cnncompile.run import report
from tests.conftest import FRAMEWORKS, SHARED_DATA, modules_imported_by, run_cli
from tests.conftest import make_idx_dir, tally_at_once, write_idx

# Small enough to train in seconds, good enough after one epoch on a few hundred digits that
# the confusion matrix has a diagonal and the mistakes are real ones.
TINY = """\
name: tiny
input: {shape: [28, 28, 1]}
layers:
  - {type: Conv2D, filters: 8, kernel_size: 3, activation: relu}
  - {type: MaxPooling2D, pool_size: 2}
  - {type: Flatten}
  - {type: Dense, units: 10, activation: softmax}
training:
  dataset: mnist
  optimizer: {type: adam, learning_rate: 0.005}
  loss: sparse_categorical_crossentropy
  epochs: 1
  batch_size: 16
  validation_split: 0.1
"""

MNIST = SHARED_DATA / "mnist"


def small_mnist(folder: Path, n_train: int = 320, n_test: int = 160) -> None:
    """A few hundred real MNIST digits (mistakes that look like digits), else random images."""
    from cnncompile.data.formats import find_idx, read_idx_dir

    if find_idx(MNIST, "t10k-labels-idx1-ubyte") is None:
        make_idx_dir(folder, n_train=n_train, n_test=n_test)
        return
    x_train, y_train, x_test, y_test = read_idx_dir(MNIST)
    folder.mkdir(parents=True)
    for name, values in (("train-images-idx3-ubyte", x_train[:n_train, ..., 0]), ("train-labels-idx1-ubyte", y_train[:n_train]),
                         ("t10k-images-idx3-ubyte", x_test[:n_test, ..., 0]), ("t10k-labels-idx1-ubyte", y_test[:n_test])):
        write_idx(folder / name, values.astype(np.uint8), False)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One real training run (tiny model, a few hundred images, 1 epoch) shared by these tests."""
    project = tmp_path_factory.mktemp("report")
    small_mnist(project / "data" / "mnist")
    (project / "tiny.yaml").write_text(TINY)
    result = run_cli("train", str(project / "tiny.yaml"), "--data-dir", str(project / "data"),
                     "--out", str(project / "run"), "--quiet", cwd=project)
    assert result.returncode == 0, result.stderr
    return project / "run"


class Resources(HTMLParser):
    """Every URL the page could fetch (src, href, srcset, CSS url()), every <img>, every <script>."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.images: list[str] = []
        self.scripts = 0
        self.svgs = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.scripts += tag == "script"
        self.svgs += tag == "svg"
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for key in ("src", "href", "srcset", "action", "poster", "data", "xlink:href"):
            if attrs.get(key):
                self.urls.append(attrs[key])
        self.urls += re.findall(r"url\(([^)]*)\)", attrs.get("style", "") or "")

    def handle_data(self, data):
        self.urls += re.findall(r"url\(([^)]*)\)|@import", data)


def resources(page: str) -> Resources:
    parser = Resources()
    parser.feed(page)
    return parser


def test_per_class_numbers_by_hand(tmp_path):
    labels = ("cat", "dog", "eel")
    # true: cat cat dog dog eel ; predicted: cat dog dog dog cat (eel is never predicted)
    probabilities = np.array([[.9, .1, 0], [.3, .6, .1], [.2, .7, .1], [.1, .8, .1], [.55, .4, .05]])
    images = np.arange(5 * 4 * 4 * 1, dtype=np.uint8).reshape(5, 4, 4, 1)
    numbers = tally_at_once(tmp_path, probabilities, np.array([0, 0, 1, 1, 2]), images, labels)
    assert numbers["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert numbers["per_class"] == [
        {"label": "cat", "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},
        {"label": "dog", "precision": 0.6667, "recall": 1.0, "f1": 0.8, "support": 2},
        {"label": "eel", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},  # 0, not NaN
    ]
    assert numbers["macro_f1"] == 0.4333
    # most confident wrong answer first
    assert numbers["mistakes"] == [{"index": 1, "true": "cat", "predicted": "dog", "confidence": 0.6},
                                   {"index": 4, "true": "eel", "predicted": "cat", "confidence": 0.55}]
    from PIL import Image

    for name in ("confusion.png", "mistakes.png"):
        with Image.open(tmp_path / name) as image:
            image.load()
            assert image.width > 200
    with Image.open(tmp_path / "mistakes.png") as grid:  # two tiles of 4x4 images drawn 3x
        assert grid.size == (2 * 132, 4 * 3 + 34 + 8)


def test_many_classes_get_a_picture_not_a_table(tmp_path):
    """A 1000-class confusion matrix as an HTML table would be a million cells: above 30 classes
    the page shows confusion.png instead, unannotated."""
    labels = [f"class {i}" for i in range(40)]
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(40), 400)
    numbers = tally_at_once(tmp_path, probabilities, rng.integers(0, 40, 400),
                              rng.integers(0, 255, (400, 8, 8, 3), dtype=np.uint8), labels)
    section = report._confusion(tmp_path, numbers, labels)
    assert '<table class="cm">' not in section and section.startswith('<img src="data:image/png;base64,')
    from PIL import Image

    with Image.open(tmp_path / "confusion.png") as image:
        assert image.width < 2000  # cells shrink with the class count
    with Image.open(tmp_path / "mistakes.png") as grid:  # 8x8 images drawn 3x: 24-pixel tiles
        assert grid.size == (8 * 132, 3 * (24 + 34 + 8))


def test_large_images_are_scaled_down_in_the_mistakes_grid(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (3, 224, 224, 3), dtype=np.uint8)
    tally_at_once(tmp_path, np.array([[.2, .8], [.9, .1], [.3, .7]]), np.array([0, 1, 0]), images, ("a", "b"))
    from PIL import Image

    with Image.open(tmp_path / "mistakes.png") as grid:  # 96-pixel tiles, not 672
        assert grid.size == (3 * 132, 96 + 34 + 8)


def test_train_writes_a_complete_report(run):
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("test_accuracy", "test_loss", "epochs", "train_seconds", "train_images_per_second", "total_params"):
        assert key in metrics  # existing fields unchanged
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == metrics["test_images"] == 160
    # the report's predictions are the model's: its accuracy is evaluate()'s to the image
    assert abs(np.trace(matrix) / matrix.sum() - metrics["test_accuracy"]) < 1 / 160 + 1e-9
    assert [c["label"] for c in metrics["per_class"]] == [str(i) for i in range(10)]
    assert sum(c["support"] for c in metrics["per_class"]) == 160
    confidences = [m["confidence"] for m in metrics["mistakes"]]
    assert len(confidences) == min(24, 160 - np.trace(matrix)) and confidences == sorted(confidences, reverse=True)
    assert (run / "spec.yaml").read_text() == TINY

    page = (run / "report.html").read_text()
    for heading in ("Architecture", "cnncompile check", "Training curves", "Confusion matrix",
                    "Per-class precision, recall and F1", "Most confidently wrong test images", "Spec", "Run",
                    "Dataset files"):
        assert f">{heading}</h" in page, heading
    assert json.loads((run / "run.json").read_text())["spec_sha256"] in page
    assert f"{metrics['test_accuracy']:.4f}" in page and f"Total params: {metrics['total_params']:,}" in page
    assert "row-normalised" in page and page.count('<table class="cm">') == 2


def test_report_is_self_contained(run):
    page = (run / "report.html").read_text()
    found = resources(page)
    assert found.scripts == 0  # readable without JavaScript
    assert found.svgs == 1  # the architecture, inline
    assert len(found.images) == 2  # curves and mistakes (the confusion matrix is an HTML table here)
    external = [u for u in found.urls if not u.startswith(("data:", "#"))]
    assert external == []
    from PIL import Image

    for src in found.images:  # every image decodes
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as image:
            image.load()
            assert image.width > 100 and image.height > 50
    # the detector itself: it sees an external reference when there is one
    assert resources('<img src="https://example.com/x.png"><div style="background:url(http://a/b)">').urls == [
        "https://example.com/x.png", "http://a/b"]


def test_report_command_rebuilds_it_without_a_framework(run, tmp_path):
    before = (run / "report.html").read_text()
    out = tmp_path / "again.html"
    assert modules_imported_by("report", str(run), "-o", str(out), watch=(*FRAMEWORKS, "matplotlib")) == []
    stamp = re.compile(r"written \d{4}-\d\d-\d\d \d\d:\d\d UTC")
    assert stamp.sub("", out.read_text()) == stamp.sub("", before)  # the same page, from the files alone


def test_report_without_graphviz_says_why_the_drawing_is_missing(run, tmp_path):
    out = tmp_path / "no-dot.html"
    result = run_cli("report", str(run), "-o", str(out), env={"PATH": str(tmp_path / "empty-bin")})
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    assert "<svg" not in page and ">Confusion matrix</h2>" in page  # everything else is there
    assert "No drawing: Graphviz&#x27;s `dot` program is not installed" in page and "FILE.dot" not in page


def test_a_run_from_before_reports_says_what_it_lacks(run, tmp_path):
    """Runs trained before per-class numbers existed still get a page, saying what is missing."""
    old = tmp_path / "old"
    shutil.copytree(run, old)
    metrics = json.loads((old / "metrics.json").read_text())
    for key in ("per_class", "macro_f1", "confusion_matrix", "mistakes"):
        del metrics[key]
    (old / "metrics.json").write_text(json.dumps(metrics))
    for name in ("spec.yaml", "confusion.png", "mistakes.png", "report.html"):
        (old / name).unlink()
    (old / "curves.png").unlink()
    result = run_cli("report", str(old))
    assert result.returncode == 0, result.stderr
    page = (old / "report.html").read_text()
    assert "This run did not record a confusion matrix (trained by an older cnncompile)." in page
    assert "curves.png is missing from the run directory." in page
    assert "<svg" in page  # the spec is found where run.json says it was (its sha256 still matches)


def test_report_command_refuses_an_unfinished_run(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    result = run_cli("report", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr == f"error: {tmp_path} has no metrics.json: the run is not complete (train it to the end first)\n"


# --- the page as a person sees it: headless Chromium ------------------------------------------------

def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


class ProxyToNowhere:
    """A TCP listener Chromium is told to use as its proxy for everything, so nothing reaches the
    network: it records the host of every request that tried to leave, and answers none. The
    browser's own traffic (Debian's Chromium 150+ calls www.google.com whatever the flags) comes
    here too, which is why the page's requests are told apart by DevTools, not by this list."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.hosts: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            conn.settimeout(5)
            try:  # "GET http://host/path HTTP/1.1" or "CONNECT host:443 HTTP/1.1"
                target = conn.recv(4096).split(b"\r\n")[0].split(b" ")[1].decode()
                self.hosts.append(re.sub(r"^\w+://", "", target).split("/")[0].split(":")[0])
            except (OSError, IndexError):
                self.hosts.append("?")
            finally:
                conn.close()

    def close(self):
        self.server.close()


def above_4(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 5)
    os.close(fd)
    return moved


class DevTools:
    """Chromium driven over its DevTools pipe (--remote-debugging-pipe: JSON messages ending in
    NUL, the browser reads fd 3 and writes fd 4). No client library: a page's Network events
    are exactly the requests that page made, never the browser's housekeeping."""

    def __init__(self, args: list[str], timeout: float = 120):
        self._log = tempfile.TemporaryFile()  # a file, not a pipe: a chatty browser never blocks on it
        browser_reads, self._write = os.pipe()
        self._read, browser_writes = os.pipe()
        # the browser's ends above fd 4, so that moving them onto 3 and 4 overwrites neither (bash, not
        # dash: fd numbers above 9)
        browser_reads, browser_writes = (above_4(fd) for fd in (browser_reads, browser_writes))
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{browser_reads} 4>&{browser_writes}', "bash", *args,
             "--remote-debugging-pipe"],
            pass_fds=(browser_reads, browser_writes), stdout=subprocess.DEVNULL, stderr=self._log)
        os.close(browser_reads)
        os.close(browser_writes)
        self.deadline = time.monotonic() + timeout
        self.events: list[dict] = []
        self._buffer = b""
        self._last_id = 0

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        try:
            os.write(self._write, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:
            raise self.exited() from None
        reply = self.wait(lambda m: m.get("id") == self._last_id)
        assert "error" not in reply, f"{method}: {reply['error']}"
        return reply["result"]

    def wait(self, match) -> dict:
        """Read messages (keeping every event) until one matches."""
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "method" in message:
                    self.events.append(message)
                if match(message):
                    return message
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer over its DevTools pipe")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise self.exited()
            self._buffer += chunk

    def exited(self) -> EOFError:
        self.process.wait(timeout=30)
        self._log.seek(0)
        return EOFError(f"Chromium exited ({self.process.returncode}): {self._log.read().decode(errors='replace')}")

    def close(self):
        try:
            self.call("Browser.close")
            self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            os.close(self._write)
            os.close(self._read)
            self._log.close()


def screenshot(page: Path, shot: Path, proxy: ProxyToNowhere, size=(1280, 2400)) -> list[str]:
    """Open PAGE in headless Chromium, save what it shows to SHOT; return every URL the page
    requested besides itself and the data: URLs it carries."""
    browser = DevTools([
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--no-default-browser-check", f"--user-data-dir={shot.parent / f'profile-{shot.stem}'}",
        f"--proxy-server=http://127.0.0.1:{proxy.port}", "--proxy-bypass-list=<-loopback>", "about:blank",
    ])
    try:
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        browser.call("Page.enable", session)
        browser.call("Network.enable", session)
        browser.call("Emulation.setDeviceMetricsOverride", session, width=size[0], height=size[1],
                     deviceScaleFactor=1, mobile=False)
        browser.call("Page.navigate", session, url=page.as_uri())
        browser.wait(lambda m: m.get("method") == "Page.loadEventFired" and m.get("sessionId") == session)
        shot.write_bytes(base64.b64decode(browser.call("Page.captureScreenshot", session, format="png")["data"]))
    finally:
        browser.close()
    return [event["params"]["request"]["url"] for event in browser.events
            if event["method"] == "Network.requestWillBeSent" and event.get("sessionId") == session
            and event["params"]["request"]["url"] != page.as_uri()
            and not event["params"]["request"]["url"].startswith("data:")]


def test_report_renders_in_a_browser_and_fetches_nothing(run, tmp_path):
    from PIL import Image

    proxy = ProxyToNowhere()
    try:
        fetched = screenshot(run / "report.html", tmp_path / "report.png", proxy)
        shutil.copy(tmp_path / "report.png", Path(os.environ.get("CNNCOMPILE_SCREENSHOT", os.devnull)))
        # control: the same browser, flags and proxy do see a page that reaches out, and what
        # the page asked for is what tried to leave through the proxy
        leaky = tmp_path / "leaky.html"
        leaky.write_text('<!DOCTYPE html><img src="http://example.com/pixel.png">'
                         '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">')
        asked = screenshot(leaky, tmp_path / "leaky.png", proxy, size=(400, 300))
        assert sorted(asked) == ["http://example.com/pixel.png", "https://fonts.googleapis.com/css?family=Roboto"]
        assert {"example.com", "fonts.googleapis.com"} <= set(proxy.hosts)
    finally:
        proxy.close()
    assert fetched == []  # the page asked for nothing beyond its own file

    with Image.open(tmp_path / "report.png") as shot:
        shot = shot.convert("RGB")
    assert shot.size == (1280, 2400)
    # Not blank: many colours (figures, heat-mapped cells, the drawing) and plenty of ink.
    assert len(shot.getcolors(1 << 20) or []) > 500
    gray = shot.convert("L")
    assert sum(gray.histogram()[:96]) > 10_000  # dark pixels: text, digits, axes (a blank page has none)
    # the confusion matrix's heat map: cells in the report's blue, so its style sheet applied
    assert sum(n for n, (r, g, b) in shot.getcolors(1 << 20) if b > 200 and r < 120 and g < 160) > 500
    # the page's background is the light grey of the CSS, so the HTML (and its style sheet) was used
    assert shot.getpixel((5, 5)) == (241, 245, 249)
