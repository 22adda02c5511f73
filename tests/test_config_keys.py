"""``taskhead config keys [TASK]``: every key of the config models with its type, default and description."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from taskhead.cli import main
from taskhead.config import RunConfig
from taskhead.config_keys import ConfigKey, config_keys
from taskhead.tasks import registered, task_options_model


def _fields(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Every field of ``model`` and of its sections by dotted key (apart from the code under test)."""
    out = {}
    for name, field in model.model_fields.items():
        out[prefix + name] = field
        for candidate in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                out.update(_fields(candidate, f"{prefix}{name}."))
    return out


def _by_key(keys: list[ConfigKey]) -> dict[tuple[str, tuple[str, ...]], ConfigKey]:
    return {(k.key, k.tasks): k for k in keys}


def test_every_run_config_field_is_listed_with_its_field_description() -> None:
    keys = config_keys()
    listed = {k.key: k for k in keys if not k.key.startswith("task.")}
    fields = _fields(RunConfig)
    assert set(listed) == set(fields)
    for key, field in fields.items():
        assert listed[key].description == (field.description or ""), key
    missing = {k.key for k in keys if not k.description}
    assert not missing, f"keys without a Field description: {sorted(missing)}"


def test_every_task_option_is_listed_under_task_with_its_task() -> None:
    keys = _by_key(config_keys())
    for task in registered():
        for name, field in task_options_model(task).model_fields.items():
            if name == "name":
                continue  # the `task` key itself
            key = keys[(f"task.{name}", (task,))]
            assert key.description == (field.description or "")
            assert key.description, f"{task}: task.{name} has no Field description"
    assert len({k.key for k in config_keys() if k.key == "task"}) == 1


def test_types_and_defaults_come_from_the_fields() -> None:
    keys = {k.key: k for k in config_keys("classification")}
    assert (keys["train.learning_rate"].type, keys["train.learning_rate"].default) == ("float (> 0)", 5e-05)
    assert keys["model.max_length"].type == "int (>= 8, <= 16384)"
    assert (
        keys["data.format"].type
        == '"auto" | "csv" | "tsv" | "jsonl" | "parquet" | "text" | "conll" | "conllu"'
    )
    assert keys["task.class_weights"].type == '"balanced" | dict[str, float] | null'
    assert keys["train.bf16"].type == 'bool | "auto"'
    assert (keys["output_dir"].type, keys["output_dir"].default) == ("path", "runs/run")
    assert (keys["model"].type, keys["model"].default) == ("section", {})
    assert (keys["model.scratch"].type, keys["model.scratch"].default) == ("section | null", None)
    assert keys["model.special_tokens"].default == []
    assert keys["task"].required and keys["task"].default is None
    assert not keys["train.epochs"].required


def test_a_task_gets_its_own_options_and_the_columns_its_descriptions_name() -> None:
    generation = {k.key: k for k in config_keys("generation")}
    assert generation["task.num_beams"].tasks == ("generation",)
    assert generation["data.columns.source"].tasks == ("generation",)  # "Generation: the source text column"
    assert generation["data.columns.text"].tasks == ()  # shared: no task named in its description
    assert "train.learning_rate" in generation
    for other in ("task.multi_label", "task.doc_stride", "data.columns.question", "data.columns.anchor"):
        assert other not in generation
    everything = config_keys()
    assert len(everything) > len(generation)
    assert {k.tasks for k in everything if k.key == "data.columns.tags"} == {("token-classification",)}


def test_cli_prints_a_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "keys", "question-answering"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["KEY", "TYPE", "DEFAULT", "TASKS", "DESCRIPTION"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {k.key for k in config_keys("question-answering")}
    assert rows["task.n_best"].split()[1:5] == ["int", "(>=", "1)", "20"]
    assert "Start and end candidates considered per window." in rows["task.n_best"]

    assert main(["config", "keys", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == len(config_keys())
    first = {k["key"]: k for k in listed}["train.learning_rate"]
    assert first == {
        "key": "train.learning_rate",
        "type": "float (> 0)",
        "default": 5e-05,
        "required": False,
        "tasks": [],
        "description": RunConfig.model_fields["train"].annotation.model_fields["learning_rate"].description,
    }


def test_an_unknown_task_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "keys", "generaton"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unknown task 'generaton'" in err and "did you mean generation?" in err
