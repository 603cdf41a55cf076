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
