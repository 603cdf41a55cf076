"""Dataset loaders on real files written here, on ../shared/data, and the download over real HTTP."""

from __future__ import annotations

import hashlib
import http.server
import threading

import numpy as np
import pytest

from cnncompile.data import datasets
from cnncompile.data.datasets import load_dataset
from cnncompile.data.formats import DataError, read_idx
from cnncompile.language.training import DatasetPath
from tests.conftest import SHARED_DATA, make_idx_dir, write_idx


@pytest.mark.parametrize("compress", [True, False])
def test_idx_directory_gzip_and_raw(tmp_path, compress):
    make_idx_dir(tmp_path / "mnist", compress=compress)
    data = load_dataset("mnist", data_dir=tmp_path)
    assert data.x_train.shape == (12, 28, 28, 1) and data.x_train.dtype == np.uint8
    assert data.y_test.shape == (6,)
    assert data.describe() == f"mnist: 12 train / 6 test images from {tmp_path / 'mnist'}"
    assert len(data.files) == 4 and all(len(h) == 64 for h in data.files.values())


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-100], "truncated or corrupt"),
    (lambda b: b"\x00\x00\x07\x03" + b[4:], "bad magic number"),
    (lambda b: b"", "bad magic number empty"),
])
def test_corrupt_idx_is_refused(tmp_path, damage, message):
    path = tmp_path / "images"
    write_idx(path, np.zeros((3, 28, 28)), compress=False)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=message):
        read_idx(path)


def test_truncated_gzip_is_refused(tmp_path):
    path = write_idx(tmp_path / "images.gz", np.zeros((30, 28, 28)))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_idx(path)


def test_npz_in_keras_layout(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "mnist.npz", x_train=rng.integers(0, 256, (8, 28, 28), dtype=np.uint8),
             y_train=rng.integers(0, 10, 8), x_test=rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
             y_test=rng.integers(0, 10, 4))
    data = load_dataset("mnist", data_dir=tmp_path)
    assert data.source == str(tmp_path / "mnist.npz")
    assert data.x_test.shape == (4, 28, 28, 1)


def test_npz_missing_arrays_and_wrong_shapes(tmp_path):
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 28, 28)))
    with pytest.raises(DataError, match="missing arrays"):
        load_dataset(DatasetPath(path=str(tmp_path / "bad.npz")))
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((2, 20, 20)), y_train=np.zeros(2, int),
             x_test=np.zeros((1, 20, 20)), y_test=np.zeros(1, int))
    with pytest.raises(DataError, match=r"train images are \(20, 20, 1\), expected \(28, 28, 1\)"):
        load_dataset("mnist", data_dir=tmp_path)


def test_image_folders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    for label in ("cat", "dog"):
        (tmp_path / "pets" / label).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(tmp_path / "pets" / label / f"{i}.png")
    data = load_dataset(DatasetPath(path="pets", test_split=0.2), spec_dir=tmp_path, image_shape=(28, 28, 1))
    assert data.labels == ("cat", "dog")
    assert data.x_train.shape == (8, 28, 28, 1) and data.x_test.shape == (2, 28, 28, 1)
    assert sorted(np.concatenate([data.y_train, data.y_test]).tolist()) == [0] * 5 + [1] * 5


@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason="shared MNIST not present")
def test_shared_real_mnist():
    data = load_dataset("mnist", data_dir=SHARED_DATA)
    assert data.x_train.shape == (5000, 28, 28, 1) and data.x_test.shape == (10000, 28, 28, 1)
    assert np.bincount(data.y_train).tolist() == [500] * 10
    assert data.files[str(SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz")] == \
        "167310007f03058885c7e95e6c0b19c20de5c7fd3031f4cbdadc9014a523d80b"


def test_nothing_found_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("CNNCOMPILE_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "DEBIAN_NAMES", {"mnist": "no-such-package-dir"})
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", data_dir=tmp_path / "empty", mirror="http://127.0.0.1:9/")
    text = str(exc.value)
    for place in (tmp_path / "empty" / "mnist", tmp_path / "empty" / "mnist.npz", tmp_path / "keras" / "datasets"):
        assert str(place) in text
    assert "/usr/share/datasets/no-such-package-dir" in text
    assert "cannot download http://127.0.0.1:9/mnist.npz" in text and "--data-dir" in text


# --- the download path against a real HTTP server on 127.0.0.1 -----------------------------

class _Server:
    def __init__(self, files: dict[str, bytes], lie_about_length: bool = False):
        served = files

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = served.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) + (1000 if lie_about_length else 0)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def npz_bytes(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "src.npz"
    np.savez(path, x_train=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), y_train=rng.integers(0, 10, 10),
             x_test=rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), y_test=rng.integers(0, 10, 5))
    return path.read_bytes()


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("CNNCOMPILE_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "DEBIAN_NAMES", {"mnist": "no-such-package-dir"})
    return tmp_path / "keras" / "datasets"


def test_download_good_hash_is_accepted_and_cached(isolated_cache, npz_bytes, monkeypatch):
    monkeypatch.setitem(datasets.REMOTES, "mnist", datasets.Remote("", {"mnist.npz": hashlib.sha256(npz_bytes).hexdigest()}))
    server = _Server({"mnist.npz": npz_bytes})
    try:
        data = load_dataset("mnist", mirror=server.url)
    finally:
        server.close()
    assert data.x_train.shape == (10, 28, 28, 1)
    assert "(downloaded)" in data.source
    assert sorted(p.name for p in isolated_cache.iterdir()) == ["mnist.npz"]
    # A second load finds it in the cache: no server needed.
    assert load_dataset("mnist").source == str(isolated_cache / "mnist.npz")


@pytest.mark.parametrize("lie, expected_hash, message", [
    (False, "0" * 64, "does not match the expected"),
    (True, None, "truncated"),
])
def test_download_bad_hash_or_truncation_leaves_nothing(isolated_cache, npz_bytes, monkeypatch, lie, expected_hash, message):
    digest = expected_hash or hashlib.sha256(npz_bytes).hexdigest()
    monkeypatch.setitem(datasets.REMOTES, "mnist", datasets.Remote("", {"mnist.npz": digest}))
    server = _Server({"mnist.npz": npz_bytes}, lie_about_length=lie)
    try:
        with pytest.raises(DataError, match=message):
            load_dataset("mnist", mirror=server.url)
    finally:
        server.close()
    assert list(isolated_cache.iterdir()) == []
