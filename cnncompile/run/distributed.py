"""Data-parallel training over tf.distribute: MirroredStrategy or MultiWorkerMirroredStrategy.

Keras 3's `model.fit` does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585:
its symbolic build and per-replica output reduction fail on PerReplica values), so this
module drives training itself: a `strategy.run` train step, metrics all-reduced across
workers, and the same Keras callbacks (checkpointing, early stopping, LR on plateau,
TensorBoard, progress) called at the same points `fit` calls them.

batch_size is global: each step takes batch_size images in all, split evenly across the
replicas of all workers. Every worker loads the dataset; tf.data's DATA auto-sharding
gives each its share of every global batch. Every training image is used: the last step of
an epoch takes the remainder (some replicas may get fewer images, or none), and losses and
metrics are averaged over the images the step really had, so an epoch means what it means
under model.fit. (Padding with zero-weight images would do the same work on dummy images
and need the weights threaded through every metric; a smaller step needs neither.)
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import cnncompile.backend  # noqa: F401  (environment for TensorFlow, before it loads)
import keras
import numpy as np
import tensorflow as tf

from cnncompile.run import checkpoint as ckpt
from cnncompile.backend import fitting as kt
from cnncompile.data.sources import array_batches
from cnncompile.run.rundir import RunError
from cnncompile.language.training import Distribute, Training

# TensorFlow's errors for a peer that is gone or a collective that timed out.
_PEER_FAILURES = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
                  tf.errors.InternalError, tf.errors.AbortedError)


class ClusterError(RunError):
    """The cluster cannot be formed or a collective failed (peer gone, bad TF_CONFIG)."""

    def __init__(self, message: str):
        super().__init__(message, where=("training", "distribute"))


@dataclass
class Cluster:
    strategy: tf.distribute.Strategy
    kind: str  # "mirrored" or "multi_worker"
    workers: int
    index: int
    replicas: int  # in total, across workers

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    @property
    def name(self) -> str:  # MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy
        return "MultiWorkerMirroredStrategy" if self.kind == "multi_worker" else "MirroredStrategy"

    def describe(self, batch_size: int) -> str:
        name = self.name
        who = f"{self.workers} worker{'s' if self.workers != 1 else ''}"
        role = f" (this is worker {self.index}{', the chief' if self.is_chief else ''})" if self.kind == "multi_worker" else ""
        per = batch_size / self.replicas
        return (f"{name}: {who}, {self.replicas} replica{'s' if self.replicas != 1 else ''}{role}; "
                f"global batch {batch_size} = {per:g} per replica")


def tf_config() -> tuple[list[str], int]:
    """(worker addresses, this worker's index) from TF_CONFIG; ClusterError if unusable."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ClusterError("multi_worker needs the TF_CONFIG environment variable, e.g. "
                           '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                           '"task": {"type": "worker", "index": 0}}')
    try:
        config = json.loads(raw)
        workers = list(config["cluster"]["worker"])
        index = int(config["task"]["index"])
        kind = config["task"]["type"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ClusterError(f"TF_CONFIG is not valid ({exc}); it needs cluster.worker and task.type/index") from None
    if kind not in ("worker", "chief") or not 0 <= index < len(workers) + (kind == "chief"):
        raise ClusterError(f"TF_CONFIG task {config['task']} does not name one of the {len(workers)} workers")
    return workers, index


def rendezvous(workers: list[str], index: int, timeout: float) -> None:
    """Return once every peer is up; ClusterError naming the missing ones after `timeout` s.

    TensorFlow waits for missing peers forever, holding the GIL inside C++ (measured: no
    other Python thread runs, and it ignores SIGTERM), so nothing in this process could end
    that wait cleanly. Hence this handshake first, in plain Python, on the same ports: each
    worker listens on its own TF_CONFIG port and sends its index to every other's. Once a
    worker has reached every peer and heard from every peer, all of them are past this point
    or about to be, so it closes its listener and lets TensorFlow take the port.
    """
    others = {i: _host_port(address) for i, address in enumerate(workers) if i != index}
    try:
        listener = socket.create_server(("", _host_port(workers[index])[1]))  # SO_REUSEADDR on POSIX
    except OSError as exc:
        raise ClusterError(f"worker {index} cannot listen on {workers[index]}: {exc.strerror or exc}") from None
    reached: set[int] = set()
    heard: set[int] = set()
    incoming: dict[socket.socket, bytes] = {}
    deadline = time.monotonic() + timeout
    try:
        while reached != set(others) or heard != set(others):
            for i in set(others) - reached:
                try:
                    # The sender closes first, so TIME_WAIT stays on its ephemeral port and the
                    # listening port is free for TensorFlow at once.
                    with socket.create_connection(others[i], timeout=1) as connection:
                        connection.sendall(f"{index}\n".encode())
                    reached.add(i)
                except OSError:
                    pass
            ready, _, _ = select.select([listener, *incoming], [], [], 0.2)
            for sock in ready:
                if sock is listener:
                    connection, _ = listener.accept()
                    incoming[connection] = b""
                    continue
                chunk = sock.recv(64)
                incoming[sock] += chunk
                if not chunk:  # the sender is done: its index is complete
                    text = incoming.pop(sock).decode(errors="replace").strip()
                    sock.close()
                    if text.isdigit() and int(text) in others:
                        heard.add(int(text))
            if time.monotonic() > deadline:
                missing = sorted(set(others) - (reached & heard))
                raise ClusterError(
                    f"worker {index} could not form the cluster within {timeout:g} s; unreachable peers: "
                    f"{', '.join(workers[i] for i in missing)}. Start every worker with the same TF_CONFIG "
                    "cluster, check hosts, ports and firewalls, or raise training.distribute.timeout_seconds")
    finally:
        for sock in (listener, *incoming):
            sock.close()


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def connect(distribute: Distribute) -> Cluster:
    """Create the strategy once every peer answers, and prove it with one collective."""
    if distribute.strategy == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        return Cluster(strategy, "mirrored", 1, 0, strategy.num_replicas_in_sync)
    workers, index = tf_config()
    timeout = distribute.timeout_seconds
    rendezvous(workers, index, timeout)
    # Every peer answered a moment ago; TensorFlow's own wait is now short. A peer that dies
    # in between would still hang it, hence the backstop: a process that kills this one.
    backstop = subprocess.Popen([sys.executable, "-c", _BACKSTOP, str(os.getpid()), str(timeout), str(index)],
                                stdin=subprocess.PIPE)
    try:
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        joined = _count_replicas(strategy)
    finally:
        backstop.stdin.close()  # EOF: the wait is over
        backstop.wait()
    replicas = strategy.num_replicas_in_sync
    if int(joined) != replicas:
        raise ClusterError(f"expected {replicas} replicas to answer, {int(joined)} did")
    return Cluster(strategy, "multi_worker", len(workers), index, replicas)


_BACKSTOP = """
import os, select, signal, sys
parent, timeout, index = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
if not select.select([sys.stdin], [], [], timeout)[0]:
    sys.stderr.write(f"error: worker {index}: every peer answered, but TensorFlow did not form the cluster "
                     f"within {timeout:g} s (a peer stopped in between?); killed\\n")
    os.kill(parent, signal.SIGKILL)
"""


def _count_replicas(strategy: tf.distribute.Strategy):
    @tf.function
    def count():
        def one():
            return tf.constant(1.0)

        return strategy.reduce("SUM", strategy.run(one), axis=None)

    return count()


def broadcast_from_chief(cluster: Cluster, values: list[np.ndarray]) -> list[np.ndarray]:
    """Every worker gets the chief's copy of `values` (same shapes everywhere), by an all-reduce
    in which the other workers contribute zeros. No shared filesystem is needed."""
    if cluster.workers == 1:
        return values
    mine = [tf.constant(v if cluster.is_chief else np.zeros_like(v)) for v in values]
    # One replica per worker here (CPU); with several local replicas, only the first contributes.
    def contribute(tensors):
        first = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group %
                         (cluster.replicas // cluster.workers), 0)
        return [tf.where(first, t, tf.zeros_like(t)) for t in tensors]

    @tf.function
    def all_reduce(tensors):
        summed = cluster.strategy.run(contribute, args=(tensors,))
        return [cluster.strategy.reduce("SUM", s, axis=None) for s in summed]

    return [t.numpy() for t in all_reduce(mine)]


def share_from_chief(cluster: Cluster, complete: bool, state: dict | None,
                     arrays: dict[str, np.ndarray]) -> tuple[bool, dict | None, dict[str, np.ndarray]]:
    """Every worker gets the chief's view of the run: finished or not, its checkpoint state
    (epoch, history, callbacks' state) and the callbacks' arrays. The other workers' own
    (scratch) values are ignored."""
    header = json.dumps({"complete": complete, "state": state,
                         "arrays": {k: [list(a.shape), a.dtype.str] for k, a in arrays.items()}}).encode()
    (length,) = broadcast_from_chief(cluster, [np.array([len(header)], np.int64)])
    mine = np.frombuffer(header.ljust(int(length[0]), b" ")[:int(length[0])], np.uint8).astype(np.int32)
    (text,) = broadcast_from_chief(cluster, [mine])
    shared = json.loads(text.astype(np.uint8).tobytes())
    layout = shared["arrays"]
    values = broadcast_from_chief(cluster, [arrays[k] if cluster.is_chief else np.zeros(shape, np.dtype(dtype))
                                            for k, (shape, dtype) in layout.items()])
    return shared["complete"], shared["state"], dict(zip(layout, values))


def restore_from_chief(cluster: Cluster, variables: list, checkpoint: list[np.ndarray] | None) -> None:
    """Every worker's `variables` take the chief's checkpoint values.

    All workers build the model the same way (MultiWorkerMirroredStrategy matches variables by
    creation order); the chief reads the checkpoint and the values reach the others by
    all-reduce, so no shared filesystem is needed.
    """
    if cluster.is_chief:
        ckpt.check_matches(variables, checkpoint)
        values = checkpoint
    else:
        values = [np.zeros(tuple(v.shape), np.dtype(v.dtype)) for v in variables]
    for variable, value in zip(variables, broadcast_from_chief(cluster, values)):
        variable.assign(value)


@contextlib.contextmanager
def peer_failures_as_cluster_errors():
    """TensorFlow's errors for a lost peer or a timed-out collective, anywhere in a
    distributed run (broadcasts, training steps), become one ClusterError saying so."""
    try:
        yield
    except _PEER_FAILURES as exc:
        raise ClusterError(f"distributed training failed: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:400]}") from exc


def fit(cluster: Cluster, model: keras.Model, training: Training, x: np.ndarray, y: np.ndarray,
        validation: tuple[np.ndarray, np.ndarray] | None, *, epochs: int, initial_epoch: int, batch_size: int,
        seed: int, callbacks: list[keras.callbacks.Callback], split=None) -> None:
    """model.fit's job under a strategy: the same batches, shuffling, metrics, callbacks and logs.

    `split`, a source whose workers read their own files (TFRecord shards: data/shards.py),
    replaces x and y: see by_file."""
    strategy = cluster.strategy
    if batch_size % cluster.replicas:
        raise ClusterError(f"batch_size {batch_size} does not split evenly across {cluster.replicas} replicas")
    if split is not None and split.reads_by_file:
        iterator, steps = by_file(cluster, split, training, batch_size=batch_size, seed=seed,
                                  first_epoch=initial_epoch, epochs=epochs)
    else:
        steps = -(-len(x) // batch_size)  # the last step takes the remainder
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        data = array_batches(x, y, batch_size=batch_size, shuffle=training.shuffle, seed=seed,
                             first_epoch=initial_epoch, epochs=epochs).with_options(options)
        iterator = iter(strategy.experimental_distribute_dataset(data))
    loss = kt.loss(training, reduction=None)
    metrics = kt.metrics(training)

    @tf.function
    def train_step(batch):
        def replica(images, labels):
            count = tf.shape(labels)[0]
            # The images this step has in all replicas: batch_size, or fewer on an epoch's last step.
            images_in_step = tf.distribute.get_replica_context().all_reduce("SUM", tf.cast(count, tf.float32))

            def forward(training_mode):
                return lambda: model(tf.cast(images, tf.float32), training=training_mode)

            with tf.GradientTape() as tape:
                # A replica left without images on a short last step must not fold the
                # statistics of an empty batch (NaN) into BatchNormalization's moving averages.
                probabilities = tf.cond(count > 0, forward(True), forward(False))
                per_image = loss(labels, probabilities)
                total = tf.reduce_sum(per_image) / images_in_step
                if model.losses:  # regularizers, scaled so replicas sum to one copy
                    total += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            gradients = tape.gradient(total, model.trainable_variables)
            model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            sums = [tf.reduce_sum(tf.cast(fn(labels, probabilities), tf.float32)) for fn in metrics.values()]
            return [total * images_in_step, tf.cast(count, tf.float32), *sums]

        per_replica = strategy.run(replica, args=batch)
        return [strategy.reduce("SUM", value, axis=None) for value in per_replica]

    callback_list = keras.callbacks.CallbackList(callbacks, model=model, epochs=epochs, steps=steps, verbose=0)
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        totals = np.zeros(2 + len(metrics))
        for step in range(steps):
            totals += [float(v) for v in train_step(next(iterator))]
            callback_list.on_train_batch_end(step, _logs(totals, metrics))
        logs = _logs(totals, metrics)
        if validation is not None:
            logs.update({f"val_{k}": v for k, v in evaluate(model, training, validation).items()})
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end()


def by_file(cluster: Cluster, split, training: Training, *, batch_size: int, seed: int, first_epoch: int,
            epochs: int):
    """(iterator, steps per epoch) for a source split by file: each worker reads only its own
    shard files (no worker reads, then drops, the others' images, as DATA auto-sharding would),
    in per-replica batches; a worker whose files hold fewer images pads its epoch with empty
    batches, so every worker takes the same number of steps and each image is used once per
    epoch. Fewer files than workers is refused, located at training.dataset."""
    from cnncompile.data.formats import DataError

    local = cluster.replicas // cluster.workers  # replicas per worker
    per_replica = batch_size // cluster.replicas
    try:
        steps = -(-split.batches_per_worker(cluster.workers, per_replica) // local)
    except DataError as exc:
        raise RunError(f"training.dataset: {exc}", where=("training", "dataset")) from None

    def worker_data(context: tf.distribute.InputContext):
        return split.worker_batches(context.num_input_pipelines, context.input_pipeline_id, per_replica,
                                    steps * local, shuffle=training.shuffle, seed=seed, first_epoch=first_epoch,
                                    epochs=epochs, one_hot=not training.loss.sparse_labels)

    return iter(cluster.strategy.distribute_datasets_from_function(worker_data)), steps


def _logs(totals: np.ndarray, metrics: dict) -> dict[str, float]:
    """Running means over the images seen so far: (loss sum, image count, metric sums...)."""
    images = max(totals[1], 1.0)
    return {"loss": totals[0] / images, **{name: totals[2 + i] / images for i, name in enumerate(metrics)}}


def evaluate(model: keras.Model, training: Training, validation, batch_size: int = 256) -> dict[str, float]:
    """Mean loss and the spec's metrics over `validation`, arrays (x, y) or a tf.data stream of
    (images, labels) batches (shards), computed locally on each worker (no collectives)."""
    loss, metrics = kt.loss(training, reduction=None), kt.metrics(training)
    totals = dict.fromkeys(["loss", *metrics], 0.0)
    if isinstance(validation, tuple):
        x, y = validation
        validation = ((x[start:start + batch_size], y[start:start + batch_size]) for start in range(0, len(x), batch_size))
    count = 0
    for images, labels in validation:
        probabilities = model(np.asarray(images, np.float32), training=False)
        totals["loss"] += float(np.sum(np.asarray(loss(labels, probabilities))))
        for name, fn in metrics.items():
            totals[name] += float(np.sum(np.asarray(fn(labels, probabilities))))
        count += len(labels)
    return {name: value / count for name, value in totals.items()}
