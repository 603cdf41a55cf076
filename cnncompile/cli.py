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

EXIT_INVALID = 1
EXIT_USAGE = 2


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
@click.option("--format", "fmt", type=click.Choice(["json", "markdown"]), default="json",
              help="json: the JSON Schema; markdown: the language reference (spec/README.md).")
def schema(fmt: str) -> None:
    """Print the JSON Schema of the spec language (for editors), or its reference."""
    from cnncompile import reference

    click.echo(reference.json_schema_text() if fmt == "json" else reference.markdown(), nl=False)


if __name__ == "__main__":  # pragma: no cover
    main()
