"""Config loading: typed sections, located errors with did-you-mean, overrides, saved resolved config."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskhead.config import load_config, parse_override
from taskhead.errors import ConfigError

GOOD = """\
task: classification
output_dir: runs/x
model:
  backbone: minilm
  max_length: 64
data:
  train: train.jsonl
train:
  epochs: 2
  learning_rate: 3.0e-5
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_loads_typed_sections_and_resolves_data_paths_against_the_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.task_name == "classification"
    assert cfg.model.max_length == 64 and cfg.train.epochs == 2.0 and cfg.train.learning_rate == 3e-5
    assert cfg.data.train == tmp_path / "train.jsonl"
    assert cfg.output_dir == Path("runs/x")  # relative to the working directory
    assert cfg.model.pooling == "cls" and cfg.train.bf16 == "auto"


def test_unknown_key_names_file_line_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("  learning_rate:", "  learnin_rate:"))
    with pytest.raises(
        ConfigError,
        match=r"config\.yaml:10: train\.learnin_rate: unknown key \(did you mean "
        r"learning_rate\?\)",
    ):
        load_config(path)


def test_bad_value_is_located(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("epochs: 2", "epochs: two"))
    with pytest.raises(ConfigError, match=r"config\.yaml:9: train\.epochs: input should be a valid number"):
        load_config(path)


def test_every_problem_is_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path, GOOD.replace("epochs: 2", "epochs: -1").replace("max_length: 64", "max_lenght: 64")
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert any("model.max_lenght: unknown key (did you mean max_length?)" in ln for ln in lines)
    assert any(":9: train.epochs: input should be greater than 0" in ln for ln in lines)


def test_unknown_task_lists_registered_tasks(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("task: classification", "task: clasification"))
    with pytest.raises(
        ConfigError,
        match=r"config\.yaml:1: task: unknown task 'clasification' \(registered: "
        r"classification, embedding, generation, language-modeling, question-answering, "
        r"token-classification; did you mean "
        r"classification\?\)",
    ):
        load_config(path)


def test_task_options_are_validated(tmp_path: Path) -> None:
    text = GOOD.replace("task: classification", "task:\n  name: classification\n  multi_labl: true")
    with pytest.raises(
        ConfigError,
        match=r"config\.yaml:3: task\.multi_labl: unknown key \(did you mean "
        r"multi_label\?\)",
    ):
        load_config(write(tmp_path, text))


def test_overrides_are_typed_and_relative_to_cwd(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, GOOD), ["train.epochs=5", "task.multi_label=true", "data.eval=dev.jsonl"]
    )
    assert cfg.train.epochs == 5.0
    assert cfg.task.multi_label is True
    assert cfg.data.eval == Path("dev.jsonl")


def test_yes_no_on_off_are_words_not_booleans(tmp_path: Path) -> None:
    # YAML 1.1 reads `no` as false, so the documented `eval_strategy: no` failed; only true/false are booleans
    cfg = load_config(
        write(tmp_path, GOOD.replace("  epochs: 2\n", "  epochs: 2\n  eval_strategy: no\n")),
        ["train.bf16=off"],
    )
    assert cfg.train.eval_strategy == "no" and cfg.train.bf16 is False
    cfg = load_config(write(tmp_path, GOOD), ["train.eval_strategy=no", "task.multi_label=yes"])
    assert cfg.train.eval_strategy == "no" and cfg.task.multi_label is True


def test_override_errors_say_override(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"override train\.batchsize: unknown key \(did you mean batch_size\?\)"
    ):
        load_config(write(tmp_path, GOOD), ["train.batchsize=4"])
    with pytest.raises(ConfigError, match=r"override 'epochs': expected key=value"):
        parse_override("epochs")


def test_duplicate_key_and_bad_yaml_are_located(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config\.yaml:3: task: duplicate key"):
        load_config(write(tmp_path, "task: classification\noutput_dir: x\ntask: classification\n"))
    with pytest.raises(ConfigError, match=r"config\.yaml:3: not valid YAML: mapping values are not allowed"):
        load_config(write(tmp_path, "task: classification\nmodel:\n  backbone: a: b\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_steps_strategy_needs_a_number(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="eval_strategy 'steps' needs eval_steps"):
        load_config(write(tmp_path, GOOD), ["train.eval_strategy=steps"])


def test_round_trip_of_resolved_config(tmp_path: Path) -> None:
    from taskhead.workflows.rundir import save_config

    cfg = load_config(write(tmp_path, GOOD), ["train.seed=7"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg
