"""One worker of test_shards.py's two-worker test: `cnncompile train ARGS` in this process (the
cluster from TF_CONFIG), with the iterator `train` gets from distributed.by_file wrapped so that
every batch it hands to a training step is recorded: the ids of this worker's images, epoch by
epoch (each image carries its id in its first two pixels), written to the JSON file OUT.json
once train has finished. One cluster shows both what each worker trained on and that the run
completes.

Usage: python tests/shards_worker.py OUT.json train SPEC --distribute multi_worker ...
"""

import json
import sys

from cnncompile.cli import main
from cnncompile.run import distributed

record: dict = {"worker": None, "steps": None, "seen": []}
by_file = distributed.by_file


class Recording:
    """The distributed iterator, unchanged, noting the ids of each batch `train` takes from it."""

    def __init__(self, iterator, cluster, steps: int):
        self.iterator, self.cluster, self.steps, self.taken = iterator, cluster, steps, 0

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.iterator)
        if self.taken % self.steps == 0:
            record["seen"].append([])  # a new epoch
        self.taken += 1
        images, _ = batch
        for local in self.cluster.strategy.experimental_local_results(images):
            record["seen"][-1] += [int(low) + 256 * int(high) for low, high in local.numpy()[:, 0, :2, 0]]
        return batch


def recording_by_file(cluster, *args, **kwargs):
    iterator, steps = by_file(cluster, *args, **kwargs)
    record["worker"], record["steps"] = cluster.index, steps
    return Recording(iterator, cluster, steps), steps


distributed.by_file = recording_by_file  # train looks it up in the module when it starts fitting
main(sys.argv[2:], prog_name="cnncompile", standalone_mode=False)
with open(sys.argv[1], "w") as out:
    json.dump(record, out)
