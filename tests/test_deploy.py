"""int8 ONNX, TFLite float/int8: verified exports, refusals that write nothing, metadata, and
`predict` on every format without TensorFlow. One tiny model, trained for one epoch on 600 real
MNIST images (accuracy is not the point; a real accuracy-drop check needs a real classifier)."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")

from cnncompile.deploy.int8 import int8_capability  # noqa: E402
from tests.conftest import EXAMPLES, ROOT, SHARED_DATA, run_cli  # noqa: E402
from tests.conftest import write_idx  # noqa: E402

SPEC = """\
name: deploy_tiny
input: {shape: [28, 28, 1]}
layers:
  - {type: Conv2D, filters: 8, kernel_size: 3, use_bias: false}
  - {type: BatchNormalization}
  - {type: Activation, activation: relu}
  - {type: MaxPooling2D, pool_size: 2}
  - {type: Flatten}
  - {type: Dropout, rate: 0.1}
  - {type: Dense, units: 10, activation: softmax}
training:
  dataset: {path: digits.npz}
  optimizer: {type: adam, learning_rate: 0.01}
  loss: sparse_categorical_crossentropy
  epochs: 1
  batch_size: 32
"""
# name -> export arguments; ONNX int8 through the CLI (its report, speeds included, is tested), the
# others in-process (TFLite int8 with one speed round instead of five: no test reads its speeds).
EXPORTS = {
    "model.onnx": None,
    "model.int8.onnx": ["--onnx", "--int8", "--calibration-images", "200"],
    "model.tflite": None,
    "model.int8.tflite": None,
}
TEST_IMAGES = 500


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A trained run of SPEC on 600 real training digits, with 500 real test digits."""
    from cnncompile.data.datasets import load_dataset

    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"real MNIST not found in {SHARED_DATA}")
    mnist = load_dataset("mnist", data_dir=SHARED_DATA)
    root = tmp_path_factory.mktemp("deploy")
    np.savez(root / "digits.npz", x_train=mnist.x_train[:600], y_train=mnist.y_train[:600],
             x_test=mnist.x_test[:TEST_IMAGES], y_test=mnist.y_test[:TEST_IMAGES])
    (root / "tiny.yaml").write_text(SPEC)
    trained = run_cli("train", "tiny.yaml", "--quiet", cwd=root)
    assert trained.returncode == 0, trained.stderr
    return root


@pytest.fixture(scope="module")
def exports(project):
    """Every format: file name -> the CLI's completed process, or the library's ExportResult."""
    from cnncompile.deploy.export import ExportRequest, export
    from cnncompile.analysis.check import compile_file
    from cnncompile.deploy.int8 import Int8Options

    compiled = compile_file(project / "tiny.yaml")
    results = {}
    for name, args in EXPORTS.items():
        if args is None:
            request = ExportRequest(name.rsplit(".", 1)[1], project / "runs" / "deploy_tiny", int8=".int8." in name,
                                    int8_options=Int8Options(calibration_images=200, measure_rounds=1))
            results[name] = export(compiled, request)
            assert results[name].path == project / "runs" / "deploy_tiny" / name
            continue
        result = run_cli("export", "tiny.yaml", *args, cwd=project)
        assert result.returncode == 0, result.stderr
        assert f"wrote runs/deploy_tiny/{name} (" in result.stdout
        results[name] = result
    return results


def onnx_metadata(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def tflite_metadata(path) -> dict[str, str]:
    from cnncompile.deploy.predict import read_tflite_metadata

    return read_tflite_metadata(path.read_bytes())


def test_onnx_int8_reports_measured_accuracy_size_and_speed(project, exports):
    out = exports["model.int8.onnx"].stdout
    run = project / "runs" / "deploy_tiny"
    accuracy = re.search(r"int8 top-1 accuracy (0\.\d{4}) vs float ONNX (0\.\d{4}) on 500 digits test images "
                         r"\(drop (-?\d+\.\d\d) points, limit 0\.5\); argmax agreement (\d+\.\d\d)%", out)
    assert accuracy, out
    size = re.search(r"size: ([\d,]+) bytes, (0\.\d\d)x the float file's ([\d,]+)", out)
    assert size, out
    # Reported sizes are the files' real sizes, not estimates.
    assert int(size[1].replace(",", "")) == (run / "model.int8.onnx").stat().st_size
    float_bytes = int(size[3].replace(",", ""))
    assert abs(float_bytes - (run / "model.onnx").stat().st_size) < 200  # same graph; metadata differs slightly
    assert float(size[2]) < 0.5
    cpu = int8_capability()
    assert f"CPU: {cpu.describe()}" in out
    for batch in (1, 64):
        line = re.search(rf"batch {batch}: int8 ([\d,]+) images/s vs float ([\d,]+) \((\d+\.\d\d)x, ([a-z :]+);", out)
        assert line, out
        faster = float(line[3]) > 1
        assert line[4] == ("faster" if faster else "not faster: slower" if float(line[3]) < 1 else "the same")

    meta = onnx_metadata(run / "model.int8.onnx")
    float_meta = onnx_metadata(run / "model.onnx")
    assert {k: meta[k] for k in float_meta if k != "cnncompile.precision"} == \
        {k: v for k, v in float_meta.items() if k != "cnncompile.precision"}
    assert (float_meta["cnncompile.precision"], meta["cnncompile.precision"]) == ("float32", "int8")
    settings = json.loads(meta["cnncompile.quantization"])
    assert settings["format"] == "QDQ" and settings["activations"] == "int8"
    assert settings["weights"] == "int8, per channel" and settings["reduce_range"] == (not cpu.vnni)
    assert (settings["calibration_images"], settings["calibration_seed"], settings["calibration_source"]) == \
        (200, 0, "digits training images")
    # Whether int8 paid here is said in the output and recorded in the file, from the same rates.
    rates = json.loads(meta["cnncompile.measured"])
    slower = [int(b) for b, r in rates["images_per_second"].items() if r["int8"] < r["float"]]
    assert rates["int8_slower_at_batches"] == slower
    assert ("note: int8 is slower than the float file on this CPU" in out) == bool(slower)
    assert (rates["verdict"] is None) == (not slower)
    with np.load(project / "digits.npz") as digits:  # for predict's light-on-dark hint
        assert float(meta["cnncompile.training_mean_pixel"]) == pytest.approx(digits["x_train"].mean(), abs=0.05)
    measured = json.loads(meta["cnncompile.accuracy"])
    assert (measured["test_images"], measured["reference"]) == (TEST_IMAGES, "float ONNX")
    assert f"{measured['accuracy']:.4f}" == accuracy[1] and f"{measured['reference_accuracy']:.4f}" == accuracy[2]
    assert f"{100 * measured['argmax_agreement']:.2f}" == accuracy[4]


def test_onnx_int8_graph_is_qdq_per_channel_and_fully_integer_after_optimization(project, exports, tmp_path):
    import onnxruntime as ort

    run = project / "runs" / "deploy_tiny"
    graph = onnx.load(str(run / "model.int8.onnx")).graph
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    weight_dq = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in initializers
                 and initializers[n.input[0]].dtype == np.int8 and initializers[n.input[0]].ndim == 4]
    assert weight_dq, "the convolution's weights are not stored as int8"
    assert all(initializers[n.input[1]].size == initializers[n.input[0]].shape[0] for n in weight_dq)  # per channel
    assert graph.node[-1].op_type == "Softmax"  # probabilities stay float, not rounded to 1/256 steps
    # Flatten's shape is a constant (no Shape op reading the last convolution), so onnxruntime fuses
    # every convolution into QLinearConv; a float Conv left between Dequantize/Quantize would be slower.
    assert "Shape" not in {n.op_type for n in onnx.load(str(run / "model.onnx")).graph.node}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(run / "model.int8.onnx"), options, providers=["CPUExecutionProvider"])
    optimized = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert "QLinearConv" in optimized and "Conv" not in optimized, optimized


def test_tflite_float_and_int8_carry_metadata_and_int8_tensors(project, exports):
    from ai_edge_litert import schema_py_generated as schema

    run = project / "runs" / "deploy_tiny"
    parity = exports["model.tflite"].verification
    assert (parity.images, parity.source, parity.batch_sizes) == (38, "digits test images", [1, 37])
    assert parity.max_abs_diff <= 1e-4 and parity.argmax_agreement == 1.0
    assert exports["model.tflite"].description == "TFLite float32"
    float_meta, int8_meta = tflite_metadata(run / "model.tflite"), tflite_metadata(run / "model.int8.tflite")
    assert float_meta == onnx_metadata(run / "model.onnx")  # the same keys and values in both formats
    assert json.loads(float_meta["cnncompile.labels"]) == [str(i) for i in range(10)]
    assert int8_meta["cnncompile.precision"] == "int8"
    assert json.loads(int8_meta["cnncompile.quantization"])["calibration_images"] == 200
    checked = exports["model.int8.tflite"].accuracy
    assert json.loads(int8_meta["cnncompile.accuracy"]) == json.loads(checked.as_metadata())
    assert (checked.reference, checked.images, checked.source) == ("float TFLite", TEST_IMAGES, "digits test images")
    assert checked.drop_points <= 0.5 and exports["model.int8.tflite"].comparison.int8_bytes == \
        (run / "model.int8.tflite").stat().st_size

    def tensor_types(path):
        model = schema.Model.GetRootAs(path.read_bytes(), 0)
        graph = model.Subgraphs(0)
        return {graph.Tensors(i).Type() for i in range(graph.TensorsLength())}

    assert schema.TensorType.INT8 not in tensor_types(run / "model.tflite")
    assert schema.TensorType.INT8 in tensor_types(run / "model.int8.tflite")
    assert (run / "model.int8.tflite").stat().st_size < 0.5 * (run / "model.tflite").stat().st_size


def test_predict_reads_every_format_without_tensorflow(project, exports, tmp_path):
    """Same conventions everywhere: raw 0-255 pixels in, probabilities out, labels from metadata.
    Float files must reproduce Keras; int8 files their own verified accuracy."""
    import cnncompile.backend  # noqa: F401
    import keras
    from PIL import Image

    run = project / "runs" / "deploy_tiny"
    with np.load(project / "digits.npz") as digits:
        x_test, y_test = digits["x_test"], digits["y_test"]
    for i in range(3):
        Image.fromarray(x_test[i, :, :, 0]).save(tmp_path / f"digit{i}.png")
    idx = write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x_test[:, :, :, 0])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y_test)
    expected = np.asarray(keras.models.load_model(run / "model.keras")(x_test[:3].astype(np.float32)))

    fake = tmp_path / "fake"  # importing TensorFlow or Keras ends the process
    for package in ("tensorflow", "keras"):
        (fake / package).mkdir(parents=True)
        (fake / package / "__init__.py").write_text(f"raise SystemExit('{package} was imported')\n")
    env = {"PYTHONPATH": f"{fake}{os.pathsep}{ROOT}"}
    for name in EXPORTS:
        result = run_cli("predict", str(run / name), "digit0.png", "digit1.png", "digit2.png", idx.name,
                         "-k", "10", "--json", cwd=tmp_path, env=env)
        assert result.returncode == 0, (name, result.stderr)
        report = json.loads(result.stdout)
        for i in range(3):
            top = report["predictions"][i]["top"]
            probabilities = np.array([p["probability"] for p in sorted(top, key=lambda p: int(p["label"]))])
            # Full-integer TFLite quantizes the softmax too: probabilities in steps of 1/256.
            assert abs(probabilities.sum() - 1) < (10 / 256 if name == "model.int8.tflite" else 1e-4), name
            if ".int8." not in name:
                assert np.abs(probabilities - expected[i]).max() < 1e-4, name
        accuracy = report["accuracy"][idx.name]
        if ".int8." in name:
            meta = onnx_metadata(run / name) if name.endswith(".onnx") else tflite_metadata(run / name)
            assert accuracy == json.loads(meta["cnncompile.accuracy"])["accuracy"], name
        else:
            assert accuracy == pytest.approx(json.loads((run / "metrics.json").read_text())["test_accuracy"], abs=1e-6), name


@pytest.mark.parametrize("fmt, reference", [("onnx", "float ONNX"), ("tflite", "float TFLite")])
def test_int8_refused_when_accuracy_drops_more_than_allowed(project, tmp_path, fmt, reference):
    """Calibrating on a single image clips every other image's activations: the check must see
    the loss (about 3 points here) and write nothing at all. (The CLI's exit 1 for an
    ExportError is tested below.)"""
    from cnncompile.deploy.export import ExportRequest, export
    from cnncompile.deploy.pipeline import ExportError
    from cnncompile.analysis.check import compile_file
    from cnncompile.deploy.int8 import Int8Options

    out = tmp_path / "out" / f"model.int8.{fmt}"
    request = ExportRequest(fmt, project / "runs" / "deploy_tiny", int8=True, output=out,
                            int8_options=Int8Options(calibration_images=1, max_accuracy_drop=0))
    with pytest.raises(ExportError) as refused:
        export(compile_file(project / "tiny.yaml"), request)
    assert re.fullmatch(rf"int8 accuracy check failed: top-1 0\.\d{{4}} against {reference} 0\.\d{{4}} on 500 "
                        rf"digits test images, a drop of \d+\.\d\d points \(limit 0\); argmax agreement "
                        rf"\d+\.\d\d%; the int8 {'ONNX' if fmt == 'onnx' else 'TFLite'} file was not written",
                        str(refused.value)), str(refused.value)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_int8_without_the_dataset_is_refused(tmp_path):
    spec = tmp_path / "nodata.yaml"
    spec.write_text(SPEC.replace("name: deploy_tiny", "name: nodata"))
    result = run_cli("export", str(spec), "--onnx", "--int8", "--untrained", "-o", str(tmp_path / "m.onnx"))
    assert result.returncode == 1 and not (tmp_path / "m.onnx").exists()
    assert (f"{spec}: error: --int8 needs the spec's dataset (training images to calibrate, labeled test images "
            f"to verify accuracy), which could not be loaded: dataset path {tmp_path / 'digits.npz'} does not exist"
            ) in result.stderr
    both = run_cli("export", str(spec), "--onnx", "--tflite")
    assert both.returncode == 2 and "choose one export format: --onnx or --tflite" in both.stderr


def test_export_policy_is_in_the_library(project):
    """Library callers of export get the same images the CLI uses: real test images for parity,
    a seeded sample of training images (never test images) for calibration."""
    from cnncompile.deploy.pipeline import PARITY_IMAGES, calibration_sample, export_data
    from cnncompile.analysis.check import compile_file

    data = export_data(compile_file(project / "tiny.yaml"))
    with np.load(project / "digits.npz") as digits:
        assert np.array_equal(data.parity_images, digits["x_test"][:PARITY_IMAGES])
        assert data.parity_source == "digits test images" and data.labels == tuple(str(i) for i in range(10))
        sample = calibration_sample(data.train_images, 50, seed=0)
        assert np.array_equal(sample, calibration_sample(data.train_images, 50, seed=0))
        assert not np.array_equal(sample, calibration_sample(data.train_images, 50, seed=1))
        train = {image.tobytes() for image in digits["x_train"]}
        assert len(sample) == 50 and all(image.tobytes() in train for image in sample)


def test_speed_verdict_names_each_batch_where_int8_is_slower():
    from cnncompile.deploy.pipeline import SizeAndSpeed, speed_verdict

    speeds = {1: {"float": 1000.0, "int8": 1200.0}, 64: {"float": 1000.0, "int8": 940.0}}
    assert speed_verdict(speeds) == ("int8 is slower than the float file on this CPU (0.94x at batch 64): it pays "
                                     "in size here, not in speed; keep the float file where speed matters")
    assert speed_verdict({1: {"float": 1.0, "int8": 2.0}}) is None
    lines = SizeAndSpeed(int8_capability(), 400, 100, speeds).lines()
    assert lines[-1] == f"note: {speed_verdict(speeds)}" and "(1.20x, faster;" in lines[2]


def test_int8_slower_than_float_is_said_in_the_output_and_the_file(project, tmp_path, monkeypatch):
    """Where int8 does not pay (no VNNI, a tiny model), export must say so, not just print ratios.
    The rates are fixed here: this CPU may well be faster in int8."""
    from cnncompile.analysis.check import compile_file
    from cnncompile.deploy import pipeline
    from cnncompile.deploy.export import ExportRequest, export
    from cnncompile.deploy.int8 import Int8Options

    speeds = {1: {"float": 1000.0, "int8": 1200.0}, 64: {"float": 1000.0, "int8": 940.0}}
    monkeypatch.setattr(pipeline, "interleaved_throughput", lambda runners, *args: {
        batch: {name: rates[name] for name in runners} for batch, rates in speeds.items()})
    out = tmp_path / "m.int8.onnx"
    result = export(compile_file(project / "tiny.yaml"),
                    ExportRequest("onnx", project / "runs" / "deploy_tiny", int8=True, output=out,
                                  int8_options=Int8Options(calibration_images=50)))
    verdict = ("int8 is slower than the float file on this CPU (0.94x at batch 64): it pays in size here, not in "
               "speed; keep the float file where speed matters")
    assert result.comparison.lines()[-1] == f"note: {verdict}"
    measured = json.loads(onnx_metadata(out)["cnncompile.measured"])
    assert (measured["int8_slower_at_batches"], measured["verdict"]) == ([64], verdict)
    assert result.comparison.int8_bytes == out.stat().st_size  # the written file, not an earlier draft


def test_every_format_is_one_row_of_the_pipeline():
    from cnncompile.deploy.export import FORMAT_MODULES, export_format
    from cnncompile.deploy.pipeline import ExportFormat

    rows = {name: export_format(name) for name in FORMAT_MODULES}
    assert all(isinstance(row, ExportFormat) for row in rows.values())
    assert [row.name for row in rows.values()] == ["ONNX", "TFLite"] and rows["onnx"].has_opset


CPUINFO_X86 = "processor\t: 0\nmodel name\t: Test Xeon\nflags\t\t: fpu sse4_1 avx2 avx512f avx512bw {extra}\n\n"


@pytest.mark.parametrize("text, vnni, described", [
    (CPUINFO_X86.format(extra="avx512_vnni avx_vnni"), True,
     "Test Xeon: int8 dot-product instructions AVX512_VNNI, AVX_VNNI"),
    (CPUINFO_X86.format(extra=""), False,
     "Test Xeon: no int8 dot-product instructions (no VNNI) (has AVX512BW, AVX2, SSE4.1)"),
    ("processor\t: 0\nFeatures\t: fp asimd asimddp\nCPU part\t: 0xd0c\n", True,
     ": int8 dot-product instructions ARM dot product (SDOT/UDOT)"),
])
def test_int8_capability_is_read_from_cpuinfo(tmp_path, text, vnni, described):
    (tmp_path / "cpuinfo").write_text(text)
    cpu = int8_capability(tmp_path / "cpuinfo")
    assert cpu.vnni == vnni and cpu.reduce_range == (not vnni)
    assert cpu.describe().endswith(described)
    unknown = int8_capability(tmp_path / "missing")
    assert not unknown.known and unknown.reduce_range and "int8 features unknown" in unknown.describe()


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_exports_to_int8_onnx_and_tflite(path, tmp_path):
    """The mechanics on every example (graph models included, as they arrive): nothing walks
    layers, so whatever converts to float ONNX/TFLite must also quantize and run. Untrained
    weights and random labels: accuracy is not the point here, so the limit is wide open."""
    from cnncompile.analysis.check import compile_file
    from cnncompile.deploy.export import export_format
    from cnncompile.deploy.int8 import Int8Options
    from cnncompile.deploy.pipeline import ExportData, export_model, fresh_model
    from cnncompile.deploy.predict import open_classifier

    compiled = compile_file(path)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (300, *compiled.spec.input.shape), dtype=np.uint8)
    classes = compiled.info.output_shape[-1]
    data = ExportData(images[:40], "random images", None, (images[200:], rng.integers(0, classes, 100)),
                      images[:200], "random")
    options = Int8Options(calibration_images=64, max_accuracy_drop=100, measure_rounds=1)
    model = fresh_model(compiled)
    results = [export_model(compiled, model, export_format("onnx"), tmp_path / "m.int8.onnx", data, int8=True,
                            options=options),
               export_model(compiled, model, export_format("tflite"), tmp_path / "m.tflite", data)]
    assert results[1].verification.max_abs_diff <= 1e-4
    for result in results:
        classifier = open_classifier(result.path)
        probabilities = classifier.probabilities(images[:3])
        assert probabilities.shape == (3, classes) and np.allclose(probabilities.sum(1), 1, atol=1e-3)
        assert classifier.metadata["cnncompile.spec_sha256"] == compiled.sha256
    assert results[0].accuracy.images == 100 and results[0].comparison.int8_bytes < results[0].comparison.float_bytes
