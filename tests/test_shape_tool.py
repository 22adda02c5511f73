"""``tools/shape.py`` (the before/after figures of issue 16) measured on a small package written here."""

from __future__ import annotations

from types import ModuleType

import pytest

FILES = {
    "__init__.py": "",
    "errors.py": "class E(ValueError): ...\n",
    # a -> b at module level; b -> a only inside a function: a circle only with function-level imports
    "a.py": "from pkg import b\nfrom pkg.errors import E\n",
    "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\n"
    "def f():\n    from pkg import a\n    return a\n",
    # c -> d -> c at module level (relative imports), d -> errors
    "c.py": "from .d import g\n",
    "d.py": "from . import c\nimport pkg.errors\n",
    "sub/__init__.py": "",
    "sub/tasks.py": "import pkg.a\n",
    "tasks/__init__.py": "",
    "tasks/base.py": "from typing import Protocol\n"
    "class Task(Protocol):\n    name: str\n    @property\n    def metric(self) -> str: ...\n"
    "    def read(self) -> None: ...\n    def encode(self) -> None: ...\n",
    "tasks/use.py": "def run(task, run):\n    if getattr(task, 'packing', False):\n        pass\n"
    "    x = getattr(run.task, 'labels', [])\n    y = hasattr(task, 'decode')\n"
    "    z = getattr(run, 'other', 1)\n"
    "    for _ in range(3):\n        pass\n    return x, y, z\n",
}


@pytest.fixture(scope="module")
def figures(shape: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("shape") / "pkg"
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return shape.measure(root)


def test_modules_are_counted_per_package_without_init_files(figures: dict) -> None:
    assert figures["modules"]["root"] == 5  # errors, a, b, c, d
    assert figures["modules"]["tasks"] == 2
    assert figures["modules"]["sub"] == 1
    assert figures["init_and_main_files"] == 3
    assert figures["total_lines"] == sum(text.count("\n") for text in FILES.values())


def test_import_kinds_are_told_apart(figures: dict) -> None:
    # module: a->b, a->errors, c->d, d->c, d->errors, sub.tasks->a; function: b->a; type: b->c
    assert figures["import_edges"] == {"module": 6, "function": 1, "type": 1}


def test_circles_and_levels_with_and_without_function_level_imports(figures: dict) -> None:
    module_level = figures["module_level"]
    assert module_level["circles"] == [["pkg.c", "pkg.d"]]
    assert [[v for v, _ in cyc] for cyc in module_level["cycles"]] == [["pkg.c", "pkg.d"]]
    assert module_level["cycles"][0][0][1].endswith("pkg/c.py:1")
    # sub.tasks -> a -> b (or errors); b's import of a runs only in a function, its import of c never
    assert module_level["levels"] == 3
    assert module_level["longest_chain"][:2] == [["pkg.sub.tasks"], ["pkg.a"]]
    both = figures["with_function_level"]
    assert both["circles"] == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.d"]]
    assert both["levels"] == 3  # sub.tasks -> {a, b} -> errors
    assert both["longest_chain"] == [["pkg.sub.tasks"], ["pkg.a", "pkg.b"], ["pkg.errors"]]
    # subpackages as one node: sub -> a, no circle across packages beyond the modules' own
    assert figures["packages_module_level"]["package_edges"] == {"sub -> root": 1}


def test_longest_functions_and_task_probes(figures: dict) -> None:
    top = figures["longest_functions"][0]
    assert (top["name"], top["lines"]) == ("run", 9)
    assert top["path"].endswith("pkg/tasks/use.py") and top["line"] == 1
    protocol = figures["task_protocol"]
    assert protocol["methods"] == ["metric", "read", "encode"]
    assert protocol["properties"] == ["metric"]
    assert protocol["attributes"] == ["name"]
    probes = [(p["call"], p["line"], p["attribute"]) for p in figures["task_probes"]]
    assert probes == [("getattr", 2, "packing"), ("getattr", 4, "labels"), ("hasattr", 5, "decode")]


def test_markdown_report_names_the_figures(shape: ModuleType, figures: dict) -> None:
    text = shape.markdown(figures)
    assert "import levels: **" in text
    assert "{pkg.c, pkg.d}" in text
    assert "| 9 | `run` |" in text
