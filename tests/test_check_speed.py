"""What `check` does to start fast, proven on its behaviour (never on time: bench/run.py times it)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _install_fake_pydantic_plugin(site: Path, marker: Path) -> None:
    """A distribution on `site` that registers a `pydantic` entry point, as logfire does; its
    module, when imported, writes `marker`."""
    (site / "fakeplugin.py").write_text(textwrap.dedent(f"""\
        from pathlib import Path
        Path({str(marker)!r}).write_text("loaded")


        class Plugin:  # pydantic.plugin.PydanticPluginProtocol: observes nothing
            def new_schema_validator(self, *args, **kwargs):
                return None, None, None


        plugin = Plugin()
        """))
    info = site / "fakeplugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[pydantic]\nfake = fakeplugin:plugin\n")


def _run(site: Path, *command: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(site)])
    return subprocess.run([sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True, check=False)


def test_check_loads_no_pydantic_plugin(tmp_path):
    """An installed pydantic plugin is not imported by `check` (pydantic would import it when
    building the spec's first validator); the control shows pydantic does find it otherwise."""
    site, marker = tmp_path / "site", tmp_path / "plugin-was-imported"
    site.mkdir()
    _install_fake_pydantic_plugin(site, marker)

    result = _run(site, "-m", "cnncompile", "check", "examples/mnist_cnn.yaml")
    assert result.returncode == 0, result.stderr
    assert "Total params: 93,322" in result.stdout
    assert not marker.exists(), "check imported a pydantic plugin"

    control = _run(site, "-c", "import pydantic; pydantic.TypeAdapter(int).validate_python(1)")
    assert control.returncode == 0, control.stderr
    assert marker.read_text() == "loaded"


def test_check_leaves_the_users_plugin_setting_alone():
    """The switch is set only while the spec compiles, and never over the user's own value."""
    from cnncompile.cli import _no_pydantic_plugins

    saved = os.environ.pop("PYDANTIC_DISABLE_PLUGINS", None)
    try:
        with _no_pydantic_plugins():
            assert os.environ["PYDANTIC_DISABLE_PLUGINS"] == "__all__"
        assert "PYDANTIC_DISABLE_PLUGINS" not in os.environ
        os.environ["PYDANTIC_DISABLE_PLUGINS"] = "logfire"
        with _no_pydantic_plugins():
            assert os.environ["PYDANTIC_DISABLE_PLUGINS"] == "logfire"
        assert os.environ["PYDANTIC_DISABLE_PLUGINS"] == "logfire"
    finally:
        os.environ.pop("PYDANTIC_DISABLE_PLUGINS", None)
        if saved is not None:
            os.environ["PYDANTIC_DISABLE_PLUGINS"] = saved


def test_compile_freezes_what_loading_the_language_made_once():
    """The collector is back on after compiling; what importing the language made is frozen the
    first time only (a second compile in the same process freezes nothing more)."""
    code = textwrap.dedent("""\
        import gc
        from cnncompile import cli
        cli._compile("examples/mnist_cnn.yaml")
        first = gc.get_freeze_count()
        cli._compile("examples/mnist_cnn.yaml")
        print(gc.isenabled(), first > 10_000, gc.get_freeze_count() == first)
        """)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout.split() == ["True", "True", "True"], result.stdout + result.stderr
