"""Import layers of the package (issue 16), read from the source with ``ast`` by ``tools/shape.py``.

Module-level and function-level imports count; imports under ``if TYPE_CHECKING:`` never run and do not.

- ``data/`` never imports ``tasks/`` or ``workflows/``; ``console`` never imports ``tasks/`` or ``workflows/``
  (both take their plain types from ``data/types.py``);
- ``engine/`` never imports ``workflows/``, ``serving/``, ``retrieval/`` or ``taskhead.cli``;
- no import circle among modules;
- importing the CLI (and the light modules it lists) does not import torch.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "src" / "taskhead"

# (importing modules, modules they must not import): a name is a module or a package prefix
RULES = (
    (("taskhead.data",), ("taskhead.tasks", "taskhead.workflows")),
    (("taskhead.console",), ("taskhead.tasks", "taskhead.workflows")),
    (
        ("taskhead.engine",),
        ("taskhead.workflows", "taskhead.serving", "taskhead.retrieval", "taskhead.cli"),
    ),
)


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def forbidden_imports(modules: dict[str, Any], rules: tuple = RULES) -> list[str]:
    """``file:line: importer -> imported`` for every run-time import that breaks a rule."""
    found = []
    for module in modules.values():
        for sources, banned in rules:
            if not _under(module.name, sources):
                continue
            for edge in module.edges:
                if edge.kind != "type" and _under(edge.target, banned):
                    found.append(f"{module.path}:{edge.line}: {module.name} -> {edge.target}")
    return sorted(found)


def import_circles(shape: ModuleType, modules: dict[str, Any]) -> list[str]:
    """Each elementary import cycle among modules (module- and function-level imports), with the
    ``file:line`` of each step."""
    g = shape.graph(modules, {"module", "function"})
    found, _ = shape.cycles(g)
    return [" -> ".join(f"{v} ({g[v][w]})" for v, w in zip(c, [*c[1:], c[0]], strict=True)) for c in found]


def test_layers_hold(shape: ModuleType) -> None:
    modules = shape.read_modules(PACKAGE)
    assert {"taskhead.data.types", "taskhead.engine.forward", "taskhead.engine.onnx"} <= set(modules)
    assert forbidden_imports(modules) == []
    assert import_circles(shape, modules) == []


def test_the_checks_catch_what_they_forbid(shape: ModuleType, tmp_path: Path) -> None:
    # a small package breaking every rule once, and one type-only import that breaks none
    files = {
        "__init__.py": "",
        "cli.py": "",
        "console.py": "def f():\n    from taskhead.tasks import base\n",
        "data/__init__.py": "",
        "data/readers.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from taskhead.workflows import train\nfrom taskhead.data import delimited\n",
        "data/delimited.py": "def rows():\n    from taskhead.data import readers\n",
        "data/types.py": "from taskhead.tasks.base import Task\n",
        "engine/__init__.py": "",
        "engine/trainer.py": "def run():\n    from taskhead.workflows.predict import forward\n"
        "    import taskhead.cli\n",
        "tasks/__init__.py": "",
        "tasks/base.py": "",
        "workflows/__init__.py": "",
        "workflows/predict.py": "forward = None\n",
        "workflows/train.py": "",
    }
    root = tmp_path / "taskhead"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    modules = shape.read_modules(root)
    assert forbidden_imports(modules) == [
        "taskhead/console.py:2: taskhead.console -> taskhead.tasks.base",
        "taskhead/data/types.py:1: taskhead.data.types -> taskhead.tasks.base",
        "taskhead/engine/trainer.py:2: taskhead.engine.trainer -> taskhead.workflows.predict",
        "taskhead/engine/trainer.py:3: taskhead.engine.trainer -> taskhead.cli",
    ]
    assert import_circles(shape, modules) == [
        "taskhead.data.delimited (taskhead/data/delimited.py:2) -> "
        "taskhead.data.readers (taskhead/data/readers.py:4)"
    ]


def test_the_cli_and_light_modules_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import taskhead.cli, taskhead.console, taskhead.data.types, taskhead.engine.onnx\n"
        "import taskhead.workflows.export, taskhead.workflows.validate\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
