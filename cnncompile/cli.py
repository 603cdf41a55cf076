"""The `cnncompile` command. Each command parses arguments, calls the library once, renders.

Exit codes: 0 success, 1 the spec (or the work it describes) is invalid, 2 usage errors.
Heavy imports (TensorFlow, onnxruntime) happen inside the commands that need them, so
`check` starts fast.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

import click

from cnncompile.language.diagnostics import Diagnostic, SpecError
from cnncompile.language.precisions import PRECISIONS
from cnncompile.deploy import DEFAULT_CALIBRATION_IMAGES, DEFAULT_MAX_ACCURACY_DROP

EXIT_INVALID = 1  # usage errors exit 2, through click


# What each command imports beyond the core install, by the extra that installs it (pyproject.toml).
EXTRAS = {
    "train": ("tensorflow", "keras", "numpy", "PIL"),
    "tune": ("tensorflow", "keras", "numpy", "matplotlib", "PIL", "optuna"),
    "export": ("tensorflow", "keras", "numpy", "PIL", "tf2onnx", "onnx", "onnxruntime"),
    "predict": ("numpy", "PIL", "onnxruntime"),
    "lsp": ("pygls", "lsprotocol"),
}
# Imported only on some paths (a .tflite file, a PostgreSQL study, int8): caught when they fail.
OPTIONAL_MODULES = {name for names in EXTRAS.values() for name in names} | {"ai_edge_litert", "sympy", "psycopg2"}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package that is itself missing or broken
        return False


def _missing_extra(command: str, extra: str, module: str) -> None:
    click.echo(f"error: `cnncompile {command}` needs the '{extra}' extra ({module} is not installed): "
               f"pip install 'cnncompile[{extra}]'", err=True)
    raise SystemExit(EXIT_INVALID)


def needs(extra: str):
    """A command that needs an optional extra says which, in one line, when it is missing:
    checked before any work, and again for a module a later code path imports."""
    def decorate(command):
        @functools.wraps(command)
        def run(*args, **kwargs):
            name = command.__name__.replace("_", " ")  # data_pack -> `cnncompile data pack`
            missing = next((module for module in EXTRAS[extra] if not _installed(module)), None)
            if missing:
                _missing_extra(name, extra, missing)
            try:
                return command(*args, **kwargs)
            except ModuleNotFoundError as exc:
                module = (exc.name or "").partition(".")[0]
                if module not in OPTIONAL_MODULES:
                    raise
                _missing_extra(name, extra, module)
        return run
    return decorate


def _is_terminal() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _print_diagnostics(diagnostics: list[Diagnostic], filename: str) -> None:
    for diagnostic in diagnostics:
        click.echo(diagnostic.render(filename), err=True)


@contextlib.contextmanager
def _gc_paused(loaded: str = "cnncompile.analysis.check"):
    """The cyclic garbage collector off while the language is imported and a spec compiled;
    the first time, what that made is frozen (kept out of later collections) before the
    collector is turned back on.

    Importing the language makes ~75 pydantic classes, their validators and schemas: ~47,000
    tracked objects by the end of a `check`, living as long as the process. Left on, the
    collector walks them again and again (~55 collections during `check`) to free nothing;
    merely paused, the first collection after it walks them all at once (~15 ms). gc.freeze is CPython's way to say
    "these are permanent". Only the call that imported the language freezes: in a process that
    compiles many specs (the tests run the CLI in-process), a later freeze would make whatever
    cyclic garbage was pending at that moment permanent too. Reference counting frees the rest.
    `loaded`: the module whose import marks the first call (see _framework_import for another)."""
    first = loaded not in sys.modules
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if first:
            gc.freeze()
        if was_enabled:
            gc.enable()


# pydantic's plugin loader, which it imports when it builds its first validator.
_PLUGIN_LOADER = "pydantic.plugin._loader"


@contextlib.contextmanager
def _no_pydantic_plugins():
    """Pydantic's documented switch, PYDANTIC_DISABLE_PLUGINS, on while the spec is compiled,
    unless the user set it. Building its first validator, pydantic reads the entry points of
    every installed distribution (~5 ms here) and imports each `pydantic` plugin it finds
    (logfire's pulls in ~670 modules, ~110 ms, to then record nothing unless configured). The
    spec's classes are ours, and no plugin has anything to do with them.

    With the switch on, pydantic's loader answers "no plugins" without reading anything, yet
    importing it still costs ~10 ms: its first line imports importlib.metadata (email, zipfile,
    csv, socket) for the entry points it will not read. So while the switch is ours, the loader
    is one that answers the same without that import (_LoaderWithoutPlugins); afterwards the
    real one loads as it always would (pytest-dev/pluggy#466 deferred the same import)."""
    if "PYDANTIC_DISABLE_PLUGINS" in os.environ:
        yield
        return
    os.environ["PYDANTIC_DISABLE_PLUGINS"] = "__all__"
    stand_in = None
    if _PLUGIN_LOADER not in sys.modules:
        stand_in = sys.modules[_PLUGIN_LOADER] = _LoaderWithoutPlugins(_PLUGIN_LOADER)
    try:
        yield
    finally:
        os.environ.pop("PYDANTIC_DISABLE_PLUGINS", None)
        if stand_in is not None and sys.modules.get(_PLUGIN_LOADER) is stand_in:
            del sys.modules[_PLUGIN_LOADER]


class _LoaderWithoutPlugins(types.ModuleType):
    """pydantic.plugin._loader as it is with PYDANTIC_DISABLE_PLUGINS=__all__: get_plugins()
    finds none. Anything else asked of it (a pydantic release that changed its loader) comes
    from the real module, which then replaces this one."""

    @staticmethod
    def get_plugins() -> tuple:
        return ()

    def __getattr__(self, name: str):
        if name.startswith("__"):  # what the import system asks of any module (__path__, ...)
            raise AttributeError(name)
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


def _compile(spec_path: str):
    """compile_file with the CLI's error handling: diagnostics and exit codes, no tracebacks."""
    try:
        with _gc_paused(), _no_pydantic_plugins():
            from cnncompile.analysis.check import compile_file

            compiled = compile_file(spec_path)
    except SpecError as exc:
        _fail(exc, spec_path)
    except OSError as exc:
        raise click.UsageError(f"cannot read {spec_path}: {exc.strerror or exc}") from None
    _print_diagnostics(list(compiled.info.warnings), spec_path)
    return compiled


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _fail(exc: SpecError, spec_path: str):
    _print_diagnostics(exc.diagnostics, spec_path)
    errors = sum(d.severity == "error" for d in exc.diagnostics)
    click.echo(f"{_count(errors, 'error')} in {spec_path}", err=True)
    raise SystemExit(EXIT_INVALID) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cnncompile")
def main() -> None:
    """Compile a CNN described in YAML: check it, train it with Keras, export it to ONNX or TFLite."""


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def check(spec: str, as_json: bool) -> None:
    """Validate SPEC and print each layer's output shape, parameters and MACs.

    No framework is imported: this takes a fraction of a second.
    """
    compiled = _compile(spec)
    info = compiled.info
    space_lines = _space_lines(compiled, spec) if compiled.spec.search else []
    if as_json:
        import json  # here: `check` without --json never needs it (~1.5 ms of start-up)

        summary_json = info.to_json()
        if compiled.weights is not None:
            plan = compiled.weights
            summary_json["weights"] = {"source": plan.source, "loaded": list(plan.loaded), "fresh": list(plan.fresh),
                                       "unused": plan.unused}
        click.echo(json.dumps(summary_json, indent=2))
        return
    from cnncompile.analysis import summary

    if _is_terminal():
        from rich.console import Console

        console = Console()
        for renderable in summary.rich_table(info):
            console.print(renderable)
    else:
        click.echo(summary.plain(info))
    if compiled.weights is not None:
        click.echo(f"weights: {compiled.weights.describe()}")
    for line in space_lines:
        click.echo(line)


def _space_lines(compiled, spec_path: str) -> list[str]:
    """Validate the search space (located errors, exit 1) and survey it for `check`."""
    from cnncompile.analysis.space import compile_space, describe

    try:
        space = compile_space(compiled)
    except SpecError as exc:
        _fail(exc, spec_path)
    return describe(space, space.survey())


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Output file; its suffix picks the format: .svg, .png, .pdf or .dot (default <name>.svg).")
@click.option("--rankdir", type=click.Choice(["TB", "LR"]), default="TB", show_default=True,
              help="Top to bottom or left to right.")
@click.option("--detail", type=click.Choice(["compact", "normal", "full"]), default="normal", show_default=True,
              help="compact: names, types, shapes; normal: + key arguments and params; full: + MACs, every argument.")
@click.option("--collapse-blocks", is_flag=True, help="One node per block use instead of its layers.")
def draw(spec: str, output: str | None, rankdir: str, detail: str, collapse_blocks: bool) -> None:
    """Draw SPEC's architecture: one node per layer with its arguments, output shape and
    parameters, edges labelled with tensor shapes. Laid out by Graphviz's `dot`; no framework
    is imported.
    """
    from cnncompile.analysis.draw import FORMATS, DrawError, draw as draw_architecture

    if output and Path(output).suffix.lower().lstrip(".") not in FORMATS:
        raise click.UsageError(f"-o {output}: the name must end in " + ", ".join(f".{f}" for f in FORMATS))
    compiled = _compile(spec)
    out = Path(output) if output else Path(f"{compiled.spec.name}.svg")
    try:
        drawing = draw_architecture(compiled, out, rankdir=rankdir, detail=detail, collapse_blocks=collapse_blocks)
    except DrawError as exc:
        click.echo(f"{spec}: error: {exc}", err=True)
        raise SystemExit(EXIT_INVALID) from None
    if drawing.note:
        click.echo(f"note: {drawing.note}", err=True)
    click.echo(f"wrote {out} ({drawing.nodes} nodes)")


@contextlib.contextmanager
def _framework_import():
    """TensorFlow and Keras imported with the cyclic garbage collector off; what they made
    frozen (kept out of later collections), and the interpreter's exit told not to walk it.

    The import makes ~500,000 tracked objects that live as long as the process. The collector
    walked them in 5 full collections during the import (~0.5 s of CPU, a fifth of it) and
    in several more at exit, where CPython's finalization collects before and while it tears
    the modules down (~1 s of CPU on this machine; docs/precision.md, the whole-process
    section). They are frozen as they are, as `_gc_paused` does for the language: a collection
    first would take 0.2 s to free ~1,300 objects (the resident memory is the same). At exit,
    gc.freeze is an atexit handler: the other handlers still run, files and streams are still
    flushed and closed, threads joined; only cyclic garbage left at exit is not walked and
    freed, which CPython does not promise anyway (finalizers of objects still alive at exit
    may not run). Only the call that imports TensorFlow does this (see _gc_paused why)."""
    first = "tensorflow" not in sys.modules
    with _gc_paused("tensorflow"):
        yield
    if first:
        atexit.register(gc.freeze)


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
@click.option("--precision", type=click.Choice(PRECISIONS),
              help="Override training.precision (auto: bfloat16 where the CPU has it, float16 on tensor-core GPUs).")
@click.option("--quiet", is_flag=True, help="Print only the result line and errors.")
@needs("train")
def train(spec: str, epochs: int | None, seed: int | None, batch_size: int | None, out: str | None,
          data_dir: str | None, force: bool, distribute: str | None, precision: str | None, quiet: bool) -> None:
    """Train SPEC on its dataset and save a reproducible, resumable run directory.

    Killed or interrupted runs resume from their last completed epoch when the same
    command is run again.
    """
    compiled = _compile(spec)  # refuse an invalid spec before TensorFlow is even imported
    from rich.console import Console

    with _framework_import():
        from cnncompile.backend.builder import BackendMismatch
        from cnncompile.progress import StageProgress
        from cnncompile.run.progress import training_progress
        from cnncompile.run.train import RunError, train_spec

    console = Console(quiet=quiet, no_color=not _is_terminal(), highlight=False, soft_wrap=True)
    try:
        result = train_spec(compiled, out=Path(out) if out else None, epochs=epochs, seed=seed, batch_size=batch_size,
                            data_dir=Path(data_dir) if data_dir else None, force=force, strategy=distribute,
                            precision=precision, log=console.print,
                            progress=None if quiet else training_progress(console),
                            data_progress=None if quiet else StageProgress(console))
    except RunError as exc:
        mark = compiled.source.value(exc.where) if exc.where else None
        _print_diagnostics([Diagnostic("error", str(exc), mark)], spec)
        raise SystemExit(EXIT_INVALID) from None
    except BackendMismatch as exc:  # a cnncompile bug: say so plainly, no traceback
        click.echo(f"{spec}: {exc}", err=True)
        raise SystemExit(EXIT_INVALID) from None
    except KeyboardInterrupt:
        click.echo("\ninterrupted; run the same command to resume from the last completed epoch", err=True)
        raise SystemExit(130) from None
    m = result.metrics
    if not result.chief:
        click.echo("worker finished; the chief writes the run directory")
        return
    if result.already_complete:
        click.echo(f"{result.out} is complete (test accuracy {m['test_accuracy']:.4f}); use --force to train again")
        return
    from cnncompile.run.report import drawing_problem

    if problem := drawing_problem():
        click.echo(f"note: {result.out / 'report.html'} has no architecture drawing: {problem}; "
                   f"then `cnncompile report {result.out}` adds it", err=True)
    click.echo(f"test accuracy {m['test_accuracy']:.4f}, loss {m['test_loss']:.4f} after {_count(m['epochs'], 'epoch')}; "
               f"{m['train_seconds']:.1f} s, {m['train_images_per_second']:,.0f} images/s; artifacts in {result.out}/")


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--trials", type=click.IntRange(min=1), help="Override search.trials: how many candidates to train.")
@click.option("--epochs", type=click.IntRange(min=1), help="Override training.epochs in every candidate.")
@click.option("--out", type=click.Path(file_okay=False), help="Tune directory (default runs/<name>-tune).")
@click.option("--storage", help="Study storage shared by processes and machines: an SQLAlchemy URL "
              "(postgresql://user:pw@host/db) or journal:PATH (default: SQLite in --out).")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Look here first for built-in datasets.")
@click.option("--timeout", type=click.FloatRange(min=0), help="Time budget in minutes: no new trial starts after it "
              "(the one training finishes), whatever --trials says.")
@needs("tune")
def tune(spec: str, trials: int | None, epochs: int | None, out: str | None, storage: str | None,
         data_dir: str | None, timeout: float | None) -> None:
    """Search SPEC's `search:` space with Optuna; write best.yaml, trials.csv and plots.

    Candidates that fail validation, shape inference or a budget are rejected in
    milliseconds, before any TensorFlow work. Run the same command again after a crash to
    continue the study; run it on several machines with one --storage to share it.
    """
    compiled = _compile(spec)
    if compiled.spec.search is None:
        click.echo(f"{spec}: error: no search: section; `tune` needs one (see spec/README.md#search)", err=True)
        raise SystemExit(EXIT_INVALID)
    from cnncompile.analysis.space import compile_space, describe

    try:
        space = compile_space(compiled)
    except SpecError as exc:
        _fail(exc, spec)
    trials = trials or space.search.trials
    for line in describe(space, space.survey(), trials):
        click.echo(line)
    from cnncompile.data.formats import DataError
    from cnncompile.run.tune import TuneError, TuneOptions, tune as run_tune

    tune_dir = Path(out) if out else Path("runs") / f"{compiled.spec.name}-tune"
    options = TuneOptions(tune_dir, trials, epochs, storage, Path(data_dir) if data_dir else None,
                          timeout=None if timeout is None else timeout * 60)
    try:
        report = run_tune(space, compiled.path, compiled.sha256, options, log=click.echo)
    except TuneError as exc:
        click.echo(f"{spec}: error: {exc}", err=True)
        raise SystemExit(EXIT_INVALID) from None
    except DataError as exc:
        mark = compiled.source.value(("training", "dataset"))
        _print_diagnostics([Diagnostic("error", f"training.dataset: {exc}", mark)], spec)
        raise SystemExit(EXIT_INVALID) from None
    except KeyboardInterrupt:
        click.echo("\ninterrupted; run the same command to continue the study", err=True)
        raise SystemExit(130) from None
    kinds = ", ".join(f"{n} {kind}" for kind, n in report.reasons.items())
    share = report.check_seconds / report.trial_seconds if report.trial_seconds else 0
    click.echo(f"study: {_count(report.trained, 'trial')} trained ({report.pruned} stopped early by the pruner); "
               f"{_count(report.rejected, 'candidate')} rejected before training{f' ({kinds})' if kinds else ''}")
    click.echo(f"static check: {report.check_seconds * 1000:.1f} ms per candidate against {report.trial_seconds:.1f} s "
               f"per trained trial ({share:.4%} of a trial)")
    b = report.best
    if b is None:
        click.echo("no trial completed; nothing to select")
        return
    metric = space.search.metric
    scored = (f"test accuracy {b['test_accuracy']:.4f} (the only model scored on the test set)"
              if b["test_accuracy"] is not None else f"it ran on {b['host']}: score it on the test set there")
    epoch = f" at epoch {b['epoch']}" if b.get("epoch") else ""
    smoothed = f" (score {b['score']:.4f} with its neighbours)" if b.get("score") not in (None, b[metric]) else ""
    click.echo(f"best: trial {b['trial']}, {metric} {b[metric]:.4f}{epoch}{smoothed}, {b['total_params']:,} params; "
               f"{scored}")
    click.echo(f"wrote {tune_dir}/best.yaml, trials.csv, history.png; runs in {tune_dir}/trials/")


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--onnx", "to_onnx", is_flag=True, help="Export to ONNX.")
@click.option("--tflite", "to_tflite", is_flag=True, help="Export to LiteRT (TFLite).")
@click.option("--int8", is_flag=True, help="Quantize to int8 (static, calibrated on training images), verified on the test set.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Output file (default <run>/model[.int8].onnx or .tflite).")
@click.option("--run", "run", type=click.Path(file_okay=False), help="Run directory holding model.keras (default runs/<name>).")
@click.option("--opset", type=click.IntRange(13, 21), default=17, show_default=True, help="ONNX opset version.")
@click.option("--untrained", is_flag=True, help="Export a freshly initialized model from the YAML alone.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where to find the images that verify (and calibrate) the export.")
@click.option("--calibration-images", type=click.IntRange(min=1), default=DEFAULT_CALIBRATION_IMAGES, show_default=True,
              help="--int8: how many training images (a fixed, seeded sample) calibrate the ranges.")
@click.option("--max-accuracy-drop", type=click.FloatRange(min=0), default=DEFAULT_MAX_ACCURACY_DROP, show_default=True,
              help="--int8: refuse when top-1 test accuracy drops by more than this many points.")
@needs("export")
def export(spec: str, to_onnx: bool, to_tflite: bool, int8: bool, output: str | None, run: str | None, opset: int,
           untrained: bool, data_dir: str | None, calibration_images: int, max_accuracy_drop: float) -> None:
    """Export SPEC's trained model to ONNX or TFLite, verified before it is written.

    Every file takes raw 0-255 pixels (input `image`, [batch, H, W, C]) and returns
    `probabilities` [batch, classes]; its metadata carries the labels and the spec's hash.
    Float files must match Keras (max |diff| <= 1e-4, same argmax); --int8 files must keep
    top-1 test accuracy within --max-accuracy-drop points of the float model.
    """
    if to_onnx == to_tflite:
        raise click.UsageError("choose one export format: --onnx or --tflite")
    compiled = _compile(spec)
    from cnncompile.deploy.export import ExportRequest, export as run_export
    from cnncompile.deploy.int8 import Int8Options
    from cnncompile.deploy.pipeline import ExportError

    request = ExportRequest("onnx" if to_onnx else "tflite", Path(run) if run else Path("runs") / compiled.spec.name,
                            int8=int8, output=Path(output) if output else None, opset=opset, untrained=untrained,
                            data_dir=Path(data_dir) if data_dir else None,
                            int8_options=Int8Options(calibration_images, max_accuracy_drop=max_accuracy_drop))
    try:
        result = run_export(compiled, request)
    except ExportError as exc:
        mark = compiled.source.value(exc.path) if exc.path is not None else None
        _print_diagnostics([Diagnostic("error", str(exc), mark)], spec)
        raise SystemExit(EXIT_INVALID) from None
    v, a = result.verification, result.accuracy
    click.echo(f"verified on {v.images} {v.source} at batch sizes {v.batch_sizes}: max |diff| {v.max_abs_diff:.2g}, "
               f"argmax agreement {v.argmax_agreement:.0%}")
    if a is not None:
        click.echo(f"int8 top-1 accuracy {a.accuracy:.4f} vs {a.reference} {a.reference_accuracy:.4f} on {a.images:,} "
                   f"{a.source} (drop {a.drop_points:.2f} points, limit {a.max_drop_points:g}); "
                   f"argmax agreement {a.argmax_agreement:.2%}")
    for line in result.comparison.lines() if result.comparison else []:
        click.echo(line)
    click.echo(f"wrote {result.path} ({result.description}{', untrained' if untrained and compiled.spec.weights is None else ''})")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, exists=True))
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("-k", "--top-k", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--invert", is_flag=True, help="Use 255 - pixel: for dark digits on a light background, when the model "
                                              "was trained on light on dark (MNIST).")
@click.option("--json", "as_json", is_flag=True, help="Print predictions (and errors) as JSON.")
@needs("predict")
def predict(model: str, images: tuple[str, ...], top_k: int, invert: bool, as_json: bool) -> None:
    """Classify PNG/JPEG or IDX IMAGES with an exported MODEL (.onnx or .tflite), without TensorFlow.

    For an IDX image file whose labels file sits beside it, also prints the accuracy. A file
    that cannot be read gets one error line and exit status 1; the other files are still
    classified. Images above 50 M pixels are refused unless $CNNCOMPILE_MAX_IMAGE_PIXELS allows more.
    """
    from cnncompile.data.formats import DataError
    from cnncompile.deploy.predict import predict as run_predict

    try:
        report = run_predict(Path(model), [Path(i) for i in images], top_k, invert=invert)
    except DataError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_INVALID) from None
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    for error in report.errors:
        click.echo(f"error: {error.message}", err=True)
    if as_json:
        import json

        answer: dict = {"predictions": [{"source": p.source, "top": [{"label": l, "probability": round(q, 6)}
                                                                    for l, q in p.top]}
                                        for p in report.predictions]}
        if report.accuracy:
            answer["accuracy"] = report.accuracy
        if report.errors:
            answer["errors"] = [{"source": e.source, "error": e.message} for e in report.errors]
        click.echo(json.dumps(answer, indent=2))
    else:
        shown = report.predictions if len(report.predictions) <= 20 else report.predictions[:20]
        for p in shown:
            click.echo(f"{p.source}: " + ", ".join(f"{label} {q:.3f}" for label, q in p.top))
        if len(report.predictions) > len(shown):
            click.echo(f"... {len(report.predictions) - len(shown):,} more (use --json for all)")
        for path, accuracy in report.accuracy.items():
            click.echo(f"{path}: accuracy {accuracy:.4f}")
    if report.errors:
        raise SystemExit(EXIT_INVALID)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Where to write it (default RUN_DIR/report.html).")
def report(run_dir: str, output: str | None) -> None:
    """Write RUN_DIR/report.html again from the run directory's files: one self-contained page
    with the architecture, curves, confusion matrix, per-class numbers and the worst mistakes.

    Needs no framework and no dataset (`train` writes it at the end of every run).
    """
    from cnncompile.run.report import ReportError, write_report

    try:
        path = write_report(Path(run_dir), output=Path(output) if output else None)
    except ReportError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_INVALID) from None
    click.echo(f"wrote {path}")


@main.command("import")
@click.argument("model", type=click.Path(dir_okay=False, exists=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The spec to write (.yaml).")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Also write the model's weights here (a .weights.h5 file), checked against the source's outputs.")
@click.option("--flat", is_flag=True, help="One layer per line: do not fold repeated structure into blocks.")
def import_(model: str, output: str, weights: str | None, flat: bool) -> None:
    """Write a spec describing MODEL, a Keras (.keras, .h5) or ONNX (.onnx) file.

    Repeated structure becomes blocks (see docs/import.md). The spec is checked to expand to
    exactly the source's layers before it is written; anything the language cannot express
    is listed at once, and nothing is written.
    """
    from cnncompile.importer.imported import ImportRefused
    from cnncompile.importer.model_import import SourceError, import_model

    try:
        result = import_model(Path(model), Path(output), Path(weights) if weights else None, flat=flat)
    except SourceError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_INVALID) from None
    except ImportRefused as exc:
        for problem in exc.problems:
            click.echo(f"{model}: error: {problem}", err=True)
        click.echo(f"{_count(len(exc.problems), 'unsupported part')} in {model}; nothing written", err=True)
        raise SystemExit(EXIT_INVALID) from None
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    blocks = f", blocks: {', '.join(result.blocks)}" if result.blocks else ""
    click.echo(f"wrote {output} ({_count(result.layers, 'layer')} in {result.text.count(chr(10))} lines{blocks})")
    if result.weights_path is not None:
        click.echo(f"wrote {result.weights_path} (outputs agree with {model}: max |diff| {result.max_abs_diff:.2g})")
    if result.weights_line:
        click.echo(f"note: this cnncompile has no `weights:` key yet; add `{result.weights_line}` to {output} "
                   "once it does", err=True)


@main.group()
def data() -> None:
    """Prepare image data for training: pack a folder into TFRecord shards, verify shards."""


def _byte_size(text: str) -> int:
    """'256MB', '1.5GB', '500KB', '1000000' -> bytes (powers of 1024, as `du -h` shows them)."""
    units = {"": 1, "B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
    number, unit = text.strip().upper(), ""
    while number and not number[-1].isdigit():
        number, unit = number[:-1], number[-1] + unit
    try:
        size = float(number) * units[unit.strip()]
    except (ValueError, KeyError):
        raise click.BadParameter(f"{text!r}: expected a size such as 256MB, 1GB or 500KB") from None
    if size < 1:
        raise click.BadParameter(f"{text!r}: must be at least one byte")
    return int(size)


@data.command("pack")
@click.argument("folder", type=click.Path(file_okay=False, exists=True))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="The shard folder to write.")
@click.option("--shard-size", default="128MB", show_default=True,
              help="Start a new shard file once one holds about this many bytes of images.")
@click.option("--images-per-shard", type=click.IntRange(min=1), help="Start a new shard after this many images "
              "(instead of --shard-size).")
@click.option("--test-split", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2, show_default=True,
              help="For a folder without train/ and test/ subfolders: the fraction held out for testing.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Decides the test split (as training.seed does for a folder) and the order images are written in.")
@click.option("--bad-images", type=click.Choice(["skip", "error"]), default="skip", show_default=True,
              help="An unreadable or truncated image: leave it out (listed), or refuse to pack.")
@click.option("--force", is_flag=True, help="Replace the shards already in --output.")
@needs("train")
def data_pack(folder: str, output: str, shard_size: str, images_per_shard: int | None, test_split: float, seed: int,
              bad_images: str, force: bool) -> None:
    """Pack an image FOLDER (FOLDER/<class>/*.jpg, or FOLDER/train/<class>/ and FOLDER/test/<class>/)
    into TFRecord shards with a manifest.json, for `dataset: {path: OUTPUT}` and for clusters.

    Images keep their original bytes (never re-encoded); every one is decoded once to refuse
    unreadable or truncated files before training. The output appears whole or not at all.
    """
    from cnncompile.data.folders import scan_folder
    from cnncompile.data.formats import DataError
    from cnncompile.data.shards import BadImages, pack

    shard_bytes = _byte_size(shard_size)
    try:
        with _stage_progress() as bars:
            scan = scan_folder(Path(folder), test_split=test_split, seed=seed, bad_images="skip",
                               progress=lambda done, total: bars("scanning", done, total))
            result = pack(scan, Path(output), seed=seed, shard_bytes=shard_bytes, images_per_shard=images_per_shard,
                          bad_images=bad_images, force=force, progress=lambda _, done, total: bars("packing", done, total))
    except BadImages as exc:
        for message in exc.bad:
            click.echo(f"error: {message}", err=True)
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_INVALID) from None
    except DataError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_INVALID) from None
    for message in result.bad:
        click.echo(f"warning: {message}; skipped", err=True)
    m = result.manifest
    parts = [f"{m.count(split):,} {split} images in {_count(len(m.files(split)), 'shard')}"
             for split in ("train", "test") if m.files(split)]
    size = sum(s.bytes for s in m.shards) / (1 << 20)
    click.echo(f"wrote {output}/: {', '.join(parts)} ({size:,.1f} MB), {len(m.classes)} classes"
               + (f"; skipped {_count(len(result.bad), 'unreadable image')}" if result.bad else ""))


@data.command("verify")
@click.argument("shards", type=click.Path(file_okay=False, exists=True))
def data_verify(shards: str) -> None:
    """Check a shard folder against its manifest.json: every shard present, its size and sha256.

    Training checks presence and sizes on every start and each record's CRC as it reads;
    this reads every byte once, e.g. after copying shards to another machine.
    """
    from cnncompile.data.formats import DataError
    from cnncompile.data.shards import verify

    try:
        with _stage_progress(unit_bytes=True) as bars:
            manifest = verify(Path(shards), lambda _, done, total: bars("verifying", done, total))
    except DataError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_INVALID) from None
    click.echo(f"{shards}: {_count(len(manifest.shards), 'shard')}, {manifest.count('train'):,} train and "
               f"{manifest.count('test'):,} test images; every size and sha256 matches manifest.json")


def _stage_progress(unit_bytes: bool = False):
    """The data commands' bars, on stderr (stdout carries the result)."""
    from rich.console import Console

    from cnncompile.progress import StageProgress

    return StageProgress(Console(stderr=True), unit_bytes=unit_bytes)


@main.command()
@click.option("--format", "fmt", type=click.Choice(["json", "markdown"]), default="json",
              help="json: the JSON Schema; markdown: the language reference (spec/README.md).")
def schema(fmt: str) -> None:
    """Print the JSON Schema of the spec language (for editors), or its reference."""
    from cnncompile.language import reference

    click.echo(reference.json_schema_text() if fmt == "json" else reference.markdown(), nl=False)


@main.command()
@needs("lsp")
def lsp() -> None:
    """Run the language server on stdin/stdout, for editors: `check`'s diagnostics as you type,
    shapes on hover and at the end of each layer's line, completion, go to definition.

    Setup for VS Code, Neovim and Helix: docs/editors.md.
    """
    from cnncompile.editor.server import serve

    serve()


if __name__ == "__main__":  # pragma: no cover
    main()
