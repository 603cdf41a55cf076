"""Multi-worker training: two real worker processes on 127.0.0.1 with TF_CONFIG, CPU only."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, make_idx_dir, run_cli, spec_text


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture
def project(tmp_path):
    make_idx_dir(tmp_path / "data" / "mnist", n_train=512, n_test=64)
    (tmp_path / "tiny.yaml").write_text(TINY.replace("epochs: 1", "epochs: 2"))
    return tmp_path


def start_workers(project: Path, *extra: str, workers: int = 2, only: list[int] | None = None,
                  ports: list[int] | None = None) -> list[subprocess.Popen]:
    ports = ports or free_ports(workers)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in only if only is not None else range(workers):
        scratch = project / f"tmp{index}"
        scratch.mkdir(exist_ok=True)
        env = {**os.environ, "NO_COLOR": "1", "TMPDIR": str(scratch), "PYTHONPATH": str(ROOT),
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "cnncompile", "train", "tiny.yaml", "--data-dir", "data", "--out", "run",
             "--distribute", "multi_worker", *extra],
            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def finish(procs: list[subprocess.Popen], timeout: float = 300) -> list[tuple[int, str, str]]:
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        results.append((proc.returncode, out, err))
    return results


def test_unreachable_peer_fails_clearly_within_the_timeout(project):
    spec = project / "tiny.yaml"
    spec.write_text(spec.read_text().replace("  callbacks:", "  distribute: {strategy: multi_worker, timeout_seconds: 5}\n  callbacks:"))
    ports = free_ports(2)
    started = time.monotonic()
    ((rc, out, err),) = finish(start_workers(project, ports=ports, only=[0]), timeout=120)
    elapsed = time.monotonic() - started
    assert rc == 1, err  # a clean exit, not a signal
    line = spec.read_text().splitlines().index("  distribute: {strategy: multi_worker, timeout_seconds: 5}") + 1
    assert err.strip().splitlines()[-1] == (
        f"tiny.yaml:{line}:15: error: worker 0 could not form the cluster within 5 s; unreachable peers: "
        f"127.0.0.1:{ports[1]}. Start every worker with the same TF_CONFIG cluster, check hosts, ports and "
        "firewalls, or raise training.distribute.timeout_seconds")
    assert "Traceback" not in err
    assert not (project / "run").exists()  # nothing half-written
    assert list((project / "tmp0").iterdir()) == []
    assert elapsed < 60


# No dropout, batch statistics or augmentation: their randomness is per replica.
SMOOTH = spec_text("""
    {type: Conv2D, filters: 4, kernel_size: 3, activation: relu}
    {type: MaxPooling2D, pool_size: 2}
    {type: Flatten}
    {type: Dense, units: 10, activation: softmax}
""", training="""
    training:
      {dataset: mnist, optimizer: {type: sgd, learning_rate: 0.05}, loss: sparse_categorical_crossentropy,
       metrics: [accuracy, top_k_categorical_accuracy], epochs: 2, batch_size: 32, validation_split: 0.25}
""")


def test_two_workers_train_on_every_image_like_one_process_and_only_the_chief_writes(project):
    """400 images, a quarter held out: 300 to train on, 9 batches of 32 and one of 12. Two
    workers must take the same steps on the same images as one process, so the weights agree
    to float rounding; dropping the 12 would move them far more. The chief alone writes the run
    directory, its report included. (TINY's dropout, batch statistics, augmentation, schedule and
    callback train on two workers in test_resume_after_killing_every_worker.)"""
    make_idx_dir(project / "data" / "mnist", n_train=400, n_test=64)
    (project / "tiny.yaml").write_text(SMOOTH)
    single = run_cli("train", "tiny.yaml", "--data-dir", "data", "--out", "single", "--quiet", cwd=project)
    assert single.returncode == 0, single.stderr
    (chief_rc, chief_out, chief_err), (other_rc, other_out, other_err) = finish(start_workers(project))
    assert chief_rc == 0, chief_err
    assert other_rc == 0, other_err
    assert "MultiWorkerMirroredStrategy: 2 workers, 2 replicas (this is worker 0, the chief); " \
           "global batch 32 = 16 per replica" in chief_out
    assert "(this is worker 1)" in other_out and "worker finished" in other_out
    import keras
    import numpy as np

    weights = [keras.models.load_model(project / out / "model.keras").get_weights() for out in ("single", "run")]
    for ours, theirs in zip(*weights, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=2e-5)
    rows = [list(csv.DictReader(open(project / out / "history.csv"))) for out in ("single", "run")]
    assert [r["epoch"] for r in rows[1]] == ["1", "2"]
    for one, two in zip(*rows, strict=True):
        assert set(one) == set(two) == {"epoch", "loss", "accuracy", "sparse_top_k_categorical_accuracy",
                                        "val_loss", "val_accuracy", "val_sparse_top_k_categorical_accuracy"}
        for key in one:
            assert float(two[key]) == pytest.approx(float(one[key]), abs=1e-4), key
    metrics = [json.loads((project / out / "metrics.json").read_text()) for out in ("single", "run")]
    assert metrics[1]["train_images"] == metrics[0]["train_images"] == 300
    assert metrics[1]["test_accuracy"] == pytest.approx(metrics[0]["test_accuracy"], abs=1e-6)

    metrics = metrics[1]
    assert metrics["epochs"] == 2
    from cnncompile.data.datasets import load_dataset

    data = load_dataset("mnist", data_dir=project / "data")  # the chief reports what its saved model scores
    predicted = keras.models.load_model(project / "run" / "model.keras").predict(data.x_test, verbose=0).argmax(-1)
    assert metrics["test_accuracy"] == pytest.approx(float(np.mean(predicted == data.y_test)))
    assert metrics["distribute"] == {"strategy": "MultiWorkerMirroredStrategy", "workers": 2, "replicas": 2,
                                     "global_batch_size": 32}
    assert list((project / "tmp1").iterdir()) == []  # the other worker's scratch run dir is gone
    record = json.loads((project / "run" / "run.json").read_text())
    assert record["distribute"]["batch_size_semantics"].startswith("global")
    # The report is the chief's too, from its own plain-call predictions (evaluate()'s).
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.sum() == 64 and len(metrics["per_class"]) == 10
    assert abs(np.trace(matrix) / 64 - metrics["test_accuracy"]) < 1 / 64 + 1e-9
    page = (project / "run" / "report.html").read_text()
    assert "MultiWorkerMirroredStrategy" in page and f"{metrics['test_accuracy']:.4f}" in page


def test_resume_after_killing_every_worker(project):
    (project / "tiny.yaml").write_text(TINY.replace("epochs: 1", "epochs: 3"))
    # 96 steps an epoch: the kill comes after epoch 1, with two epochs (192 steps) to spare.
    make_idx_dir(project / "data" / "mnist", n_train=2048, n_test=64)
    procs = start_workers(project, "--batch-size", "16")
    state = project / "run" / "checkpoint" / "state.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        if state.exists() and json.loads(state.read_text())["epoch"] >= 1:
            break
        time.sleep(0.05)
    assert all(p.poll() is None for p in procs), "training ended before it could be killed"
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
    killed_at = json.loads(state.read_text())["epoch"]

    (rc0, out0, err0), (rc1, out1, err1) = finish(start_workers(project, "--batch-size", "16"))
    assert rc0 == 0 and rc1 == 0, err0 + err1
    assert f"resuming from epoch {killed_at}" in out0 and f"resuming from epoch {killed_at}" in out1
    epochs = [row["epoch"] for row in csv.DictReader(open(project / "run" / "history.csv"))]
    assert epochs == [str(e) for e in range(1, 4)]

    (rc0, out0, _), (rc1, out1, _) = finish(start_workers(project))
    assert rc0 == rc1 == 0 and "run is complete" not in out1
    assert "is complete" in out0


def test_mirrored_on_this_machine(project):
    result = run_cli("train", "tiny.yaml", "--data-dir", "data", "--out", "run", "--distribute", "mirrored",
                     cwd=project)
    assert result.returncode == 0, result.stderr
    assert "MirroredStrategy: 1 worker, 1 replica; global batch 32 = 32 per replica" in result.stdout
    assert json.loads((project / "run" / "metrics.json").read_text())["distribute"]["strategy"] == "MirroredStrategy"


def test_missing_tf_config_is_a_clear_error(project):
    result = run_cli("train", "tiny.yaml", "--data-dir", "data", "--distribute", "multi_worker", cwd=project,
                     env={"TF_CONFIG": ""})
    assert result.returncode == 1
    assert "multi_worker needs the TF_CONFIG environment variable" in result.stderr
