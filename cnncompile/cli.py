"""The `cnncompile` command. Each command parses arguments, calls the library once, renders.

Exit codes: 0 success, 1 the spec (or the work it describes) is invalid, 2 usage errors.
Heavy imports (TensorFlow, onnxruntime) happen inside the commands that need them, so
`check` starts fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from cnncompile.diagnostics import Diagnostic, SpecError

EXIT_INVALID = 1  # usage errors exit 2, through click


def _is_terminal() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _print_diagnostics(diagnostics: list[Diagnostic], filename: str) -> None:
    for diagnostic in diagnostics:
        click.echo(diagnostic.render(filename), err=True)


def _compile(spec_path: str):
    """compile_file with the CLI's error handling: diagnostics and exit codes, no tracebacks."""
    from cnncompile.frontend import compile_file

    try:
        compiled = compile_file(spec_path)
    except SpecError as exc:
        _print_diagnostics(exc.diagnostics, spec_path)
        errors = sum(d.severity == "error" for d in exc.diagnostics)
        click.echo(f"{errors} error{'s' if errors != 1 else ''} in {spec_path}", err=True)
        raise SystemExit(EXIT_INVALID) from None
    except OSError as exc:
        raise click.UsageError(f"cannot read {spec_path}: {exc.strerror or exc}") from None
    _print_diagnostics(list(compiled.info.warnings), spec_path)
    return compiled


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cnncompile")
def main() -> None:
    """Compile a CNN described in YAML: check it, train it with Keras, export it to ONNX."""


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def check(spec: str, as_json: bool) -> None:
    """Validate SPEC and print each layer's output shape, parameters and MACs.

    No framework is imported: this takes a fraction of a second.
    """
    compiled = _compile(spec)
    info = compiled.info
    if as_json:
        click.echo(json.dumps(info.to_json(), indent=2))
        return
    from cnncompile import summary

    if _is_terminal():
        from rich.console import Console

        console = Console()
        for renderable in summary.rich_table(info):
            console.print(renderable)
    else:
        click.echo(summary.plain(info))


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--epochs", type=click.IntRange(min=1), help="Override training.epochs.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), help="Override training.seed.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Override training.batch_size.")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (default runs/<name>).")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Look here first for built-in datasets.")
@click.option("--force", is_flag=True, help="Start over, discarding a finished or unfinished run in --out.")
@click.option("--distribute", type=click.Choice(["mirrored", "multi_worker"]),
              help="Override training.distribute.strategy (multi_worker reads the cluster from TF_CONFIG).")
@click.option("--quiet", is_flag=True, help="Print only the result line and errors.")
def train(spec: str, epochs: int | None, seed: int | None, batch_size: int | None, out: str | None,
          data_dir: str | None, force: bool, distribute: str | None, quiet: bool) -> None:
    """Train SPEC on its dataset and save a reproducible, resumable run directory.

    Killed or interrupted runs resume from their last completed epoch when the same
    command is run again.
    """
    compiled = _compile(spec)  # refuse an invalid spec before TensorFlow is even imported
    training = compiled.spec.training
    if training is None:
        click.echo(f"{spec}: error: no training: section; `train` needs one (dataset, optimizer, ...)", err=True)
        raise SystemExit(EXIT_INVALID)
    from rich.console import Console

    console = Console(quiet=quiet, no_color=not _is_terminal(), highlight=False, soft_wrap=True)
    run_dir = Path(out) if out else Path("runs") / compiled.spec.name
    from cnncompile.data.datasets import load_dataset
    from cnncompile.data.formats import DataError

    try:
        dataset = load_dataset(training.dataset, data_dir=Path(data_dir) if data_dir else None,
                               spec_dir=compiled.path.parent, image_shape=tuple(compiled.spec.input.shape),
                               seed=seed if seed is not None else training.seed)
    except DataError as exc:
        mark = compiled.source.value(("training", "dataset"))
        _print_diagnostics([Diagnostic("error", f"training.dataset: {exc}", mark)], spec)
        raise SystemExit(EXIT_INVALID) from None
    console.print(dataset.describe())
    from cnncompile.progress import RichProgress
    from cnncompile.spec.training import Distribute
    from cnncompile.train import RunError, TrainOptions, train as run_training

    plan = training.distribute
    if distribute:
        plan = Distribute(strategy=distribute, **({"timeout_seconds": plan.timeout_seconds} if plan else {}))
    options = TrainOptions(run_dir, epochs or training.epochs, batch_size or training.batch_size,
                           training.seed if seed is None else seed, force, plan)

    try:
        result = run_training(compiled, dataset, options, log=console.print,
                              progress=None if quiet else RichProgress(console), error_prefix=f"{spec}: error: ")
    except RunError as exc:
        click.echo(f"{spec}: error: {exc}", err=True)
        raise SystemExit(EXIT_INVALID) from None
    except Exception as exc:
        from cnncompile.backend.builder import BackendMismatch
        from cnncompile.distributed import ClusterError

        if isinstance(exc, BackendMismatch):  # a cnncompile bug: say so plainly, no traceback
            click.echo(f"{spec}: {exc}", err=True)
            raise SystemExit(EXIT_INVALID) from None
        if options.distribute is None or not _is_cluster_failure(exc, ClusterError):
            raise
        click.echo(f"{spec}: error: distributed training failed: {type(exc).__name__}: "
                   f"{str(exc).splitlines()[0][:400]}", err=True)
        raise SystemExit(EXIT_INVALID) from None
    except KeyboardInterrupt:
        click.echo("\ninterrupted; run the same command to resume from the last completed epoch", err=True)
        raise SystemExit(130) from None
    m = result.metrics
    if not result.chief:
        click.echo("worker finished; the chief writes the run directory")
        return
    if result.already_complete:
        click.echo(f"{run_dir} is complete (test accuracy {m['test_accuracy']:.4f}); use --force to train again")
        return
    click.echo(f"test accuracy {m['test_accuracy']:.4f}, loss {m['test_loss']:.4f} after {m['epochs']} epochs; "
               f"{m['train_seconds']:.1f} s, {m['train_images_per_second']:,.0f} images/s; artifacts in {run_dir}/")


def _is_cluster_failure(exc: Exception, cluster_error: type) -> bool:
    """Our own ClusterError, or TensorFlow's errors for a lost peer or a timed-out collective."""
    import tensorflow as tf

    return isinstance(exc, (cluster_error, tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                            tf.errors.CancelledError, tf.errors.InternalError, tf.errors.AbortedError))


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--onnx", "to_onnx", is_flag=True, help="Export to ONNX (the only format so far).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output file (default <run>/model.onnx).")
@click.option("--run", "run", type=click.Path(file_okay=False), help="Run directory holding model.keras (default runs/<name>).")
@click.option("--opset", type=click.IntRange(13, 21), default=17, show_default=True, help="ONNX opset version.")
@click.option("--untrained", is_flag=True, help="Export a freshly initialized model from the YAML alone.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where to find the test images used to verify the export.")
def export(spec: str, to_onnx: bool, output: str | None, run: str | None, opset: int, untrained: bool,
           data_dir: str | None) -> None:
    """Export SPEC's trained model to ONNX, verified against Keras before it is written.

    The file takes raw 0-255 pixels (input `image`, [batch, H, W, C]) and returns
    `probabilities` [batch, classes]; its metadata carries the labels and the spec's hash.
    """
    if not to_onnx:
        raise click.UsageError("choose an export format: --onnx")
    compiled = _compile(spec)
    run_dir = Path(run) if run else Path("runs") / compiled.spec.name
    out = Path(output) if output else run_dir / ("model.untrained.onnx" if untrained else "model.onnx")
    images, source, labels = _verification_images(compiled, data_dir)
    from cnncompile.export import ExportError, export_onnx, fresh_model, load_trained

    try:
        model = fresh_model(compiled) if untrained else load_trained(compiled, run_dir)
        result = export_onnx(compiled, model, out, images, source, opset=opset, labels=labels, untrained=untrained)
    except ExportError as exc:
        mark = compiled.source.value(exc.path) if exc.path is not None else None
        _print_diagnostics([Diagnostic("error", str(exc), mark)], spec)
        raise SystemExit(EXIT_INVALID) from None
    v = result.verification
    click.echo(f"verified on {v.images} {v.source} at batch sizes {v.batch_sizes}: max |diff| {v.max_abs_diff:.2g}, "
               f"argmax agreement {v.argmax_agreement:.0%}")
    click.echo(f"wrote {out} (opset {opset}{', untrained' if untrained else ''})")


def _verification_images(compiled, data_dir: str | None):
    """Real test images from the spec's dataset when it can be found; else seeded noise, said so."""
    import numpy as np

    training = compiled.spec.training
    if training is not None:
        from cnncompile.data.datasets import load_dataset
        from cnncompile.data.formats import DataError

        try:
            data = load_dataset(training.dataset, data_dir=Path(data_dir) if data_dir else None,
                                spec_dir=compiled.path.parent, image_shape=tuple(compiled.spec.input.shape))
            return data.x_test[:64], f"{data.name} test images", data.labels
        except DataError:
            pass
    noise = np.random.default_rng(0).integers(0, 256, (64, *compiled.spec.input.shape), dtype=np.uint8)
    return noise, "random images (the dataset was not found)", None


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, exists=True))
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-k", "--top-k", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print predictions as JSON.")
def predict(model: str, images: tuple[str, ...], top_k: int, as_json: bool) -> None:
    """Classify PNG/JPEG or IDX IMAGES with an exported MODEL.onnx (onnxruntime only, no TensorFlow).

    For an IDX image file whose labels file sits beside it, also prints the accuracy.
    """
    from cnncompile.data.formats import DataError
    from cnncompile.predict import predict as run_predict

    try:
        report = run_predict(Path(model), [Path(i) for i in images], top_k)
    except DataError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_INVALID) from None
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    if as_json:
        click.echo(json.dumps({"predictions": [{"source": p.source, "top": [{"label": l, "probability": round(q, 6)}
                                                                           for l, q in p.top]}
                                               for p in report.predictions],
                               "accuracy": report.accuracy}, indent=2))
        return
    shown = report.predictions if len(report.predictions) <= 20 else report.predictions[:20]
    for p in shown:
        click.echo(f"{p.source}: " + ", ".join(f"{label} {q:.3f}" for label, q in p.top))
    if len(report.predictions) > len(shown):
        click.echo(f"... {len(report.predictions) - len(shown):,} more (use --json for all)")
    for path, accuracy in report.accuracy.items():
        click.echo(f"{path}: accuracy {accuracy:.4f}")


@main.command()
@click.option("--format", "fmt", type=click.Choice(["json", "markdown"]), default="json",
              help="json: the JSON Schema; markdown: the language reference (spec/README.md).")
def schema(fmt: str) -> None:
    """Print the JSON Schema of the spec language (for editors), or its reference."""
    from cnncompile import reference

    click.echo(reference.json_schema_text() if fmt == "json" else reference.markdown(), nl=False)


if __name__ == "__main__":  # pragma: no cover
    main()
