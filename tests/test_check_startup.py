"""What `check` leaves out of its start-up, proven on its behaviour (bench/run.py times it):
pydantic's plugin loader and importlib.metadata, the training classes a spec does not use,
the export's int8 module."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.test_check_speed import _install_fake_pydantic_plugin

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str, site: Path | None = None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *([str(site)] if site else [])])
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_check_imports_neither_the_plugin_loader_nor_importlib_metadata():
    """The whole command, as a user runs it: what it imports, and what it does not."""
    loaded = _python("""\
        import sys
        from cnncompile.cli import main
        try:
            main(["check", "examples/mnist_cnn.yaml"])
        except SystemExit as exit:
            assert exit.code in (0, None), exit.code
        for name in ("importlib.metadata", "email", "zipfile", "pydantic.plugin._loader", "json",
                     "cnncompile.deploy.int8", "cnncompile.analysis.check"):
            print(name in sys.modules)
        """)
    assert loaded[-7:] == ["False"] * 6 + ["True"]


def test_plugins_load_as_usual_after_check(tmp_path):
    """The stand-in loader lives only while `check` compiles: a validator built afterwards in
    the same process (plugins on) gets pydantic's real loader, which finds an installed plugin."""
    site, marker = tmp_path / "site", tmp_path / "plugin-was-imported"
    site.mkdir()
    _install_fake_pydantic_plugin(site, marker)
    printed = _python("""\
        import sys
        from cnncompile import cli
        cli._compile("examples/mnist_cnn.yaml")
        print("pydantic.plugin._loader" in sys.modules)
        import pydantic
        pydantic.TypeAdapter(int).validate_python(1)
        print(type(sys.modules["pydantic.plugin._loader"]).__name__)
        """, site)
    assert printed == ["False", "module"]
    assert marker.read_text() == "loaded"


def test_the_stand_in_loader_answers_no_plugins_and_defers_the_rest_to_pydantics():
    """get_plugins() finds none, as pydantic's own does with PYDANTIC_DISABLE_PLUGINS=__all__;
    any other name (a pydantic release that changed its loader) comes from the real module,
    which then takes the stand-in's place."""
    printed = _python("""\
        import os, sys
        from cnncompile import cli
        with cli._no_pydantic_plugins():
            loader = sys.modules["pydantic.plugin._loader"]
            print(type(loader).__name__, list(loader.get_plugins()))
            print(loader.PYDANTIC_ENTRY_POINT_GROUP)  # not the stand-in's: the real module's
            real = sys.modules["pydantic.plugin._loader"]
            print(type(real).__name__, list(real.get_plugins()))  # pydantic's answer, switch on
        print("pydantic.plugin._loader" in sys.modules)
        """)
    assert printed == ["_LoaderWithoutPlugins", "[]", "pydantic", "module", "[]", "True"]


@pytest.mark.parametrize("user_setting", ["__all__", "logfire"])
def test_a_users_own_plugin_setting_gets_pydantics_own_loader(user_setting):
    """When the user set PYDANTIC_DISABLE_PLUGINS, pydantic's loader is left entirely to pydantic."""
    printed = _python(f"""\
        import os, sys
        os.environ["PYDANTIC_DISABLE_PLUGINS"] = {user_setting!r}
        from cnncompile import cli
        cli._compile("examples/mnist_cnn.yaml")
        print(type(sys.modules["pydantic.plugin._loader"]).__name__)
        """)
    assert printed == ["module"]


def test_modelspecs_validator_holds_no_training_entry_class():
    """Training's entries are validated by their own class, built when a spec first uses one:
    after checking the seed spec, ModelSpec's validator contains none of the 24 entry classes,
    and only the three the spec names (rmsprop, categorical_crossentropy, accuracy) are built."""
    printed = _python("""\
        from cnncompile import cli
        from cnncompile.language import training
        from cnncompile.language.model import ModelSpec
        cli._compile("examples/mnist_cnn.yaml")
        def models(node):  # every class a core schema validates as a model, nested or not
            if isinstance(node, dict):
                if node.get("type") == "model":
                    yield node["cls"]
                for value in node.values():
                    yield from models(value)
            elif isinstance(node, list):
                for value in node:
                    yield from models(value)
        inside = set(models(ModelSpec.__pydantic_core_schema__))
        print(len(inside & set(training.ENTRY_TYPES)), training.Training in inside)
        print(*sorted(cls.__name__ for cls in training.ENTRY_TYPES if cls.__pydantic_complete__))
        """)
    assert printed == ["0", "True", "Accuracy", "CategoricalCrossentropy", "RMSprop"]


_HEAD = ("name: m\ninput: {shape: [8, 8, 1]}\nlayers:\n  - {type: Flatten}\n  - {type: Dense, units: 10}\n"
         "training:\n  dataset: mnist\n  ")


@pytest.mark.parametrize(("entry", "message"), [
    # What pydantic's discriminated unions said, kept word for word by the lazy validation.
    ("optimizer: 5", "8:14: error: training.optimizer: expected a mapping, received 5"),
    ("optimizer: {beta_1: 0.5}", "8:3: error: training.optimizer: missing 'type': say which optimizer this is"),
    ("optimizer: {type: 7}",
     "8:14: error: training.optimizer: unknown optimizer '7'; expected one of sgd, rmsprop, adam, adamw, nadam"),
    ("optimizer: {type: adam, beta_1: 2}", "8:35: error: training.optimizer.beta_1: must be <= 1.0, received 2"),
    ("optimizer: {type: sgd, learning_rate: x}",
     "8:41: error: training.optimizer.learning_rate: expected a number or a mapping, received 'x'"),
    ("optimizer: {type: sgd, learning_rate: {type: CosinDecay, initial_learning_rate: 0.1}}",
     "8:41: error: training.optimizer.learning_rate: unknown learning-rate schedule 'CosinDecay'; "
     "did you mean 'CosineDecay'?"),
    ("callbacks: [EarlyStopping]", "8:15: error: training.callbacks[0]: expected a mapping, received 'EarlyStopping'"),
    ("callbacks: [{type: EarlyStop}]",
     "8:15: error: training.callbacks[0]: unknown callback 'EarlyStop'; did you mean 'EarlyStopping'?"),
    ("phases: [{epochs: 1, learning_rate: {type: CosineDecay}}]",
     "8:39: error: training.phases[0].learning_rate: missing required key 'initial_learning_rate'"),
])
def test_training_entries_say_what_the_discriminated_unions_said(tmp_path, entry, message):
    spec = tmp_path / "m.yaml"
    spec.write_text(_HEAD + entry + "\n")
    from click.testing import CliRunner

    from cnncompile.cli import main

    result = CliRunner().invoke(main, ["check", str(spec)])
    assert result.exit_code == 1
    assert f"{spec}:{message}" in result.output.splitlines(), result.output
