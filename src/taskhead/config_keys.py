"""``taskhead config keys [TASK]``: every config key with its type, default and description.

Everything comes from the pydantic ``Field``s of ``config.py`` (``RunConfig`` and its sections) and of each
registered task's ``Options`` (the ``task.*`` keys). A shared key belongs to certain tasks only where its
description says so: it starts with the task's name, e.g. ``Generation: the source text column``.
Imported when the CLI builds its parser: no torch, and pydantic and the config load only when used.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

_WIDTHS = (40, 36, 20, 20)  # the widest KEY, TYPE, DEFAULT and TASKS columns of the table
_CONSTRAINTS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("min_length", "length >="))


@dataclass(frozen=True)
class ConfigKey:
    """One config key.

    Attributes:
        key: dotted name, e.g. ``train.learning_rate`` (task options: ``task.multi_label``).
        type: the accepted values, e.g. ``float (> 0)``, ``"cls" | "mean" | "max"``, ``section``.
        default: the default as JSON (``{}`` for a section of defaults); ``None`` when required.
        required: the key has no default.
        tasks: the tasks the key applies to; empty: every task.
        description: the ``Field``'s description (empty where it has none).
    """

    key: str
    type: str
    default: Any
    required: bool
    tasks: tuple[str, ...]
    description: str


def config_keys(task: str | None = None) -> list[ConfigKey]:
    """Every key of a run config, in the order of the config models.

    With ``task``: that task's options (``task.*``) and the shared keys, without those whose description
    names another task (``data.columns.question`` for generation).

    Args:
        task: a registered task name; ``None`` lists the keys of every task.

    Raises:
        ConfigError: ``task`` is not a registered task (the message lists them and the closest).
    """
    from taskhead.config import RunConfig
    from taskhead.tasks import registered, task_options_model

    names = [task] if task is not None else registered()
    options = {name: task_options_model(name) for name in names}  # raises for an unknown name
    prefixes = {f"{name.replace('-', ' ').capitalize()}:": name for name in registered()}
    keys: list[ConfigKey] = []
    for name, field in RunConfig.model_fields.items():
        if name == "task":
            keys.append(_key("task", field, type_text="name | mapping"))
            for task_name, model in options.items():
                keys += [k for k in _section_keys(model, "task.", (task_name,)) if k.key != "task.name"]
        else:
            keys += [_key(name, field), *_section_keys(_section(field.annotation), f"{name}.", ())]
    marked = [_with_tasks(k, prefixes) for k in keys]
    return [k for k in marked if task is None or not k.tasks or task in k.tasks]


def _section_keys(model: Any, prefix: str, tasks: tuple[str, ...]) -> Iterator[ConfigKey]:
    if model is None:
        return
    for name, field in model.model_fields.items():
        yield _key(f"{prefix}{name}", field, tasks=tasks)
        yield from _section_keys(_section(field.annotation), f"{prefix}{name}.", tasks)


def _with_tasks(key: ConfigKey, prefixes: dict[str, str]) -> ConfigKey:
    declared = [task for prefix, task in prefixes.items() if key.description.startswith(prefix)]
    if key.tasks or not declared:
        return key
    return ConfigKey(key.key, key.type, key.default, key.required, tuple(declared), key.description)


def _section(annotation: Any) -> Any:
    """The section model inside an annotation (``ScratchConfig | None`` -> ``ScratchConfig``), else None."""
    from pydantic import BaseModel

    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _key(key: str, field: Any, *, type_text: str | None = None, tasks: tuple[str, ...] = ()) -> ConfigKey:
    required = field.is_required()
    return ConfigKey(
        key=key,
        type=type_text or _type_text(field.annotation) + _constraints(field.metadata),
        default=None if required else _json_default(field.get_default(call_default_factory=True)),
        required=required,
        tasks=tasks,
        description=field.description or "",
    )


def _json_default(value: Any) -> Any:
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return {}  # a section of its own defaults: `model: {}`
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _type_text(annotation: Any) -> str:
    """``int | None`` -> ``int | null``; ``Literal["a", "b"]`` -> ``"a" | "b"``; a section -> ``section``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if origin is Literal:
        return " | ".join(json.dumps(arg) for arg in args)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_text(arg) for arg in args)
    if _section(annotation) is not None:
        return "section"
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(_type_text(arg) for arg in args)}]"
    if annotation is Path:
        return "path"
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def _constraints(metadata: list[Any]) -> str:
    bounds = [
        f"{sign} {getattr(m, name)}" for m in metadata for name, sign in _CONSTRAINTS if hasattr(m, name)
    ]
    return f" ({', '.join(bounds)})" if bounds else ""


def keys_table(keys: list[ConfigKey]) -> str:
    """A plain-text table, one key a line: key, type, default, tasks, description.

    Columns are as wide as their widest cell up to ``_WIDTHS``; a longer cell (a long list of values)
    pushes the rest of its own line to the right.
    """
    rows = [("KEY", "TYPE", "DEFAULT", "TASKS", "DESCRIPTION")]
    for k in keys:
        default = "(required)" if k.required else json.dumps(k.default, ensure_ascii=False)
        rows.append((k.key, k.type, default, ",".join(k.tasks) or "all", k.description))
    widths = [min(cap, max(len(row[i]) for row in rows)) for i, cap in enumerate(_WIDTHS)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[4]]) for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _cmd_config(args: argparse.Namespace) -> int:
    keys = config_keys(args.task)
    if args.json:
        sys.stdout.write(json.dumps([asdict(k) for k in keys], ensure_ascii=False, indent=1) + "\n")
    else:
        sys.stdout.write(keys_table(keys))
    return 0


def register(subparsers: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Add ``taskhead config keys [TASK] [--json]`` to the CLI."""
    p = subparsers.add_parser("config", help="describe the run configuration")
    sub = p.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    k = sub.add_parser(
        "keys",
        help="every config key with its type, default and description",
        description="Every key of a run config (dotted, as in overrides: train.learning_rate=3e-5) with its "
        "type, default, the tasks it applies to and its description. With TASK: its options (task.*) and the "
        "shared keys, without those whose description names another task.",
    )
    k.add_argument("task", nargs="?", metavar="TASK", help="a task name, e.g. classification (default: all)")
    k.add_argument("--json", action="store_true", help="a JSON list of {key, type, default, required, ...}")
    return {"config": _cmd_config}
