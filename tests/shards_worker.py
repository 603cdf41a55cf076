"""One worker of test_shards.py's two-worker test: forms the cluster from TF_CONFIG, then reads
the spec's training shards exactly as `train` does under multi_worker (distributed.by_file),
step by step, and writes the ids of the images it was given each epoch (each image carries its
id in its first two pixels) to the JSON file named by argv[2].

Usage: python tests/shards_worker.py SPEC OUT.json
"""

import json
import sys

from cnncompile.analysis.check import compile_file
from cnncompile.data.datasets import load_dataset
from cnncompile.language.training import Distribute
from cnncompile.run import distributed

compiled = compile_file(sys.argv[1])
training = compiled.spec.training
dataset = load_dataset(training.dataset, spec_dir=compiled.path.parent, image_shape=tuple(compiled.spec.input.shape),
                       seed=training.seed)
count = dataset.train.count - int(dataset.train.count * training.validation_split)  # as train's FitData
cluster = distributed.connect(Distribute(strategy="multi_worker", timeout_seconds=60))
iterator, steps = distributed.by_file(cluster, dataset.train.slice(0, count), training,
                                      batch_size=training.batch_size, seed=training.seed, first_epoch=0,
                                      epochs=training.epochs)
seen = []
for epoch in range(training.epochs):
    ids = []
    for step in range(steps):
        images, labels = next(iterator)
        for local in cluster.strategy.experimental_local_results(images):
            ids += [int(low) + 256 * int(high) for low, high in local.numpy()[:, 0, :2, 0]]
    seen.append(ids)
with open(sys.argv[2], "w") as out:
    json.dump({"worker": cluster.index, "steps": steps, "seen": seen}, out)
