"""Run the located-error suite against the oldest and newest pydantic that pyproject.toml allows.

validate.py turns pydantic's errors (type, loc, ctx) into located messages; this proves the
mapping on both ends of the allowed range, in throwaway virtual environments (network to
PyPI needed, ~1 minute each):

    python bench/pydantic_range.py              # oldest allowed and newest published
    python bench/pydantic_range.py 2.9.2        # any versions you name

Exit status 0 only when every version passes.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = ["tests/test_spec_errors.py", "tests/test_shapes.py"]  # framework-free: spec, validate, inference


def allowed_range() -> tuple[str, str]:
    """('2.7', '3') from the `pydantic>=2.7,<3` requirement."""
    requirement = next(d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
                       if d.startswith("pydantic"))
    return re.search(r">=([\d.]+)", requirement).group(1), re.search(r"<([\d.]+)", requirement).group(1)


def newest_below(ceiling: str) -> str:
    """The newest release below the ceiling, as pip itself lists them."""
    listing = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "pydantic"], check=True,
                             capture_output=True, text=True).stdout
    versions = re.search(r"Available versions: (.*)", listing).group(1).split(", ")
    key = lambda v: tuple(int(p) for p in v.split("."))  # noqa: E731
    return max((v for v in versions if re.fullmatch(r"\d+(\.\d+)*", v) and key(v) < key(ceiling)), key=key)


def run(version: str) -> bool:
    with tempfile.TemporaryDirectory(prefix=f"pydantic-{version}-") as folder:
        venv.create(folder, with_pip=True)
        python = str(Path(folder) / "bin" / "python")
        # pytest-xdist: pyproject's addopts pass -n; one process is enough here.
        subprocess.run([python, "-m", "pip", "install", "-q", f"pydantic=={version}", "PyYAML", "click", "rich",
                        "pytest", "pytest-xdist", "numpy"], check=True)
        result = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", *SUITE], cwd=ROOT,
                                env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
        print(f"pydantic {version}: {result.stdout.strip().splitlines()[-1]}")
        if result.returncode:
            print(result.stdout[-4000:])
        return result.returncode == 0


def main() -> int:
    versions = sys.argv[1:]
    if not versions:
        oldest, ceiling = allowed_range()
        versions = [oldest if oldest.count(".") == 2 else f"{oldest}.0", newest_below(ceiling)]
    return 0 if all([run(v) for v in versions]) else 1


if __name__ == "__main__":
    sys.exit(main())
