"""Data-parallel training over tf.distribute: MirroredStrategy or MultiWorkerMirroredStrategy.

Keras 3's `model.fit` does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585:
its symbolic build and per-replica output reduction fail on PerReplica values), so this
module drives training itself: a `strategy.run` train step, metrics all-reduced across
workers, and the same Keras callbacks (checkpointing, early stopping, LR on plateau,
TensorBoard, progress) called at the same points `fit` calls them.

batch_size is global: each step takes batch_size images in all, split evenly across the
replicas of all workers. Every worker loads the dataset; tf.data's DATA auto-sharding
gives each its share of every global batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import cnncompile.backend  # noqa: F401  (environment for TensorFlow, before it loads)
import keras
import numpy as np
import tensorflow as tf

from cnncompile.spec.training import Distribute, Training


class ClusterError(Exception):
    """The cluster cannot be formed or a collective failed (peer gone, bad TF_CONFIG)."""


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


# Runs in a separate process: while TensorFlow waits for missing peers it holds the GIL inside
# C++ (measured: no other Python thread runs), so only another process can stop the wait.
_WATCHDOG = """
import os, select, signal, socket, sys, time
parent, timeout, index, message = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
addresses = sys.argv[5:]
ready, _, _ = select.select([sys.stdin], [], [], timeout)
if ready:
    sys.exit(0)  # the parent said the cluster is up, or it exited (EOF)
missing = []
for i, address in enumerate(addresses):
    if i == index:
        continue
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        missing.append(address)
peers = ", ".join(missing) if missing else "none refuse connections, but not every worker joined"
sys.stderr.write(message.replace("{peers}", peers) + "\\n")
sys.stderr.flush()
os.kill(parent, signal.SIGTERM)
time.sleep(3)
try:
    os.kill(parent, signal.SIGKILL)
except ProcessLookupError:
    pass
"""


def connect(distribute: Distribute, error_prefix: str = "error: ") -> Cluster:
    """Create the strategy and prove every peer is there with one collective.

    TensorFlow waits for missing peers forever, so a watchdog process ends this one after
    timeout_seconds with a message naming the peers that do not answer.
    """
    if distribute.strategy == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        return Cluster(strategy, "mirrored", 1, 0, strategy.num_replicas_in_sync)
    workers, index = tf_config()
    timeout = distribute.timeout_seconds
    message = (f"{error_prefix}worker {index} could not form the cluster within {timeout} s; unreachable peers: "
               "{peers}. Start every worker with the same TF_CONFIG cluster, check hosts, ports and "
               "firewalls, or raise training.distribute.timeout_seconds")
    watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(timeout), str(index),
                                 message, *workers], stdin=subprocess.PIPE)
    try:
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        joined = _count_replicas(strategy)
    finally:
        watchdog.stdin.write(b"up\n")
        watchdog.stdin.close()
        watchdog.wait()
    replicas = strategy.num_replicas_in_sync
    if int(joined) != replicas:
        raise ClusterError(f"expected {replicas} replicas to answer, {int(joined)} did")
    return Cluster(strategy, "multi_worker", len(workers), index, replicas)


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


def restore_from_chief(cluster: Cluster, variables: list, checkpoint: list[np.ndarray] | None) -> None:
    """Every worker's `variables` take the chief's checkpoint values.

    All workers build the model the same way (MultiWorkerMirroredStrategy matches variables by
    creation order); the chief reads the checkpoint and the values reach the others by
    all-reduce, so no shared filesystem is needed.
    """
    if cluster.is_chief:
        values = checkpoint
        if [v.shape for v in values] != [tuple(v.shape) for v in variables]:
            raise ClusterError("the checkpoint's variables do not match the model built from the spec")
    else:
        values = [np.zeros(tuple(v.shape), np.dtype(v.dtype)) for v in variables]
    for variable, value in zip(variables, broadcast_from_chief(cluster, values)):
        variable.assign(value)


def fit(cluster: Cluster, model: keras.Model, training: Training, loss: keras.losses.Loss,
        x: np.ndarray, y: np.ndarray, *, epochs: int, initial_epoch: int, batch_size: int, seed: int,
        callbacks: list[keras.callbacks.Callback]) -> None:
    """model.fit's job under a strategy: the same split, shuffling, callbacks and logs."""
    strategy = cluster.strategy
    val_count = int(len(x) * training.validation_split)
    x_train, y_train = (x[:-val_count], y[:-val_count]) if val_count else (x, y)
    steps = len(x_train) // batch_size
    if steps == 0:
        raise ClusterError(f"batch_size {batch_size} is larger than the {len(x_train)} training images")
    if batch_size % cluster.replicas:
        raise ClusterError(f"batch_size {batch_size} does not split evenly across {cluster.replicas} replicas")

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    data = tf.data.Dataset.from_tensor_slices((x_train, y_train))
    if training.shuffle:  # same seed on every worker: one global order, sharded
        data = data.shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True)
    # Repeat, then take exactly `steps` per epoch: every worker runs the same number of steps,
    # which collectives require (a ragged last batch would leave some waiting).
    data = data.repeat().batch(batch_size, drop_remainder=True).with_options(options).prefetch(2)
    iterator = iter(strategy.experimental_distribute_dataset(data))
    sparse = training.loss.type == "sparse_categorical_crossentropy"

    def correct(labels, probabilities):
        truth = tf.cast(labels, tf.int64) if sparse else tf.argmax(labels, axis=-1)
        return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probabilities, axis=-1), tf.reshape(truth, [-1])), tf.float32))

    @tf.function
    def train_step(batch):
        def replica(images, labels):
            with tf.GradientTape() as tape:
                probabilities = model(tf.cast(images, tf.float32), training=True)
                per_image = loss(labels, probabilities)
                total = tf.nn.compute_average_loss(per_image, global_batch_size=batch_size)
                if model.losses:  # regularizers, scaled so replicas sum to one copy
                    total += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            gradients = tape.gradient(total, model.trainable_variables)
            model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return total, correct(labels, probabilities)

        step_loss, step_correct = strategy.run(replica, args=batch)
        return strategy.reduce("SUM", step_loss, axis=None), strategy.reduce("SUM", step_correct, axis=None)

    callback_list = keras.callbacks.CallbackList(callbacks, model=model, epochs=epochs, steps=steps, verbose=0)
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        loss_sum, correct_sum = 0.0, 0.0
        for step in range(steps):
            step_loss, step_correct = train_step(next(iterator))
            loss_sum += float(step_loss)
            correct_sum += float(step_correct)
            callback_list.on_train_batch_end(step, {"loss": loss_sum / (step + 1),
                                                    "accuracy": correct_sum / ((step + 1) * batch_size)})
        logs = {"accuracy": correct_sum / (steps * batch_size), "loss": loss_sum / steps}
        if val_count:
            val_loss, val_accuracy = evaluate(model, loss, x[-val_count:], y[-val_count:], sparse)
            logs.update(val_accuracy=val_accuracy, val_loss=val_loss)
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end()


def evaluate(model: keras.Model, loss: keras.losses.Loss, x: np.ndarray, y: np.ndarray, sparse: bool,
             batch_size: int = 256) -> tuple[float, float]:
    """Mean loss and accuracy over (x, y), computed locally on each worker (no collectives)."""
    total_loss, total_correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        probabilities = np.asarray(model(x[start:start + batch_size].astype(np.float32), training=False))
        labels = y[start:start + batch_size]
        total_loss += float(np.sum(np.asarray(loss(labels, probabilities))))
        truth = labels.reshape(-1) if sparse else labels.argmax(-1)
        total_correct += int((probabilities.argmax(-1) == truth).sum())
    return total_loss / len(x), total_correct / len(x)
