"""The import-linter contracts in `.importlinter` hold, and they would catch a lower layer importing a higher one.

`make test` runs this module, so a change that makes `models/` import `pipelines/` (or `serving/` import
`components/`) fails the suite, not only a separate lint step.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(cwd / ".importlinter"), "--no-cache"],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_project_keeps_its_import_contracts():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def _toy_project(tmp_path: Path, offending: dict[str, str]) -> Path:
    """The five top-level packages, empty but for `offending` (module path -> source), under this contract."""
    for package in ("pipelines", "components", "models", "schemas", "serving"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    for module, source in offending.items():
        (tmp_path / module).write_text(source)
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


@pytest.mark.parametrize(
    ("offending", "contract"),
    [
        ({"models/trainer.py": "from pipelines import config\n"}, "Layers:"),
        ({"components/gate.py": "import pipelines.errors\n"}, "Layers:"),
        ({"schemas/files.py": "from models import hparams\n"}, "Layers:"),
        ({"serving/cli.py": "from pipelines import errors\n"}, "serving imports nothing"),
        ({"serving/rest.py": "import components.registry_gate\n"}, "serving imports nothing"),
    ],
    ids=[
        "models->pipelines",
        "components->pipelines",
        "schemas->models",
        "serving->pipelines",
        "serving->components",
    ],
)
def test_the_contract_breaks_when_a_lower_layer_imports_a_higher_one(tmp_path, offending, contract):
    result = _lint_imports(_toy_project(tmp_path, offending))
    assert result.returncode == 1, result.stdout + result.stderr
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), result.stdout


def test_the_contract_allows_a_higher_layer_importing_a_lower_one(tmp_path):
    allowed = {
        "pipelines/config.py": "from models import hparams\nfrom schemas import errors\n",
        "components/gate.py": "from schemas import errors\n",
        "serving/cli.py": "from schemas import errors\n",
    }
    for name in ("models/hparams.py", "schemas/errors.py"):
        allowed[name] = ""
    result = _lint_imports(_toy_project(tmp_path, allowed))
    assert result.returncode == 0, result.stdout + result.stderr
