"""The shipped example configs (``examples/*/config.yaml``): one per registered task, each valid with its own
data files, each named in the README. Validation only: no model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

import taskhead
from taskhead.tasks import registered

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "examples").glob("*/config.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.parent.name for p in CONFIGS])
def test_example_config_validates_with_its_own_data(path: Path) -> None:
    report = taskhead.validate(path)
    assert report.splits["train"]
    assert report.splits["eval"], f"{path}: an example shows evaluation too"
    for split in ("train", "eval", "test"):
        file = getattr(report.config.data, split)
        if file is not None:
            assert Path(file).resolve().parent == path.parent, f"{path}: data.{split} is not next to it"


def test_every_registered_task_has_an_example() -> None:
    tasks = {taskhead.load_config(path).task_name for path in CONFIGS}
    assert tasks == set(registered())


def test_the_readme_names_every_example() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [p.parent.name for p in CONFIGS if f"examples/{p.parent.name}/" not in readme]
    assert not missing, f"README.md does not mention examples/{{{', '.join(missing)}}}/"
