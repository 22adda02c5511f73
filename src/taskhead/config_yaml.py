"""YAML for configs: ``SafeLoader`` (no aliases, YAML 1.2 booleans), ``yaml_load``, each key path's line
(``line_map``), reading a config file with its size and kind checked, and dotted ``key=value`` overrides
(``parse_override``, ``apply_override``). ``config.load_config`` puts them together."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from taskhead.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20  # a config is a few hundred bytes; anything near this is not one


class SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (``*name``, merge keys ``<<: *name`` too).

    ``yaml.safe_load`` expands aliases: a few hundred bytes of nested anchors name billions of values and
    fill memory when the config is walked or validated. Counting aliases would not bound that (nine aliases
    of nine aliases are 9**9 values), so any alias is refused, located at its line.
    """

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(
                f"line {event.start_mark.line + 1}: YAML alias *{event.anchor}: anchors and aliases are not "
                f"supported (nested aliases can expand to billions of values); write the values out"
            )
        return super().compose_node(parent, index)


# YAML 1.2 booleans: only true/false. YAML 1.1 (PyYAML's default) also reads yes/no/on/off as booleans,
# so `eval_strategy: no` (a documented value) became False; as strings, pydantic still reads them into
# bool fields.
_BOOL = "tag:yaml.org,2002:bool"
SafeLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SafeLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def yaml_load(text: str) -> Any:
    """Parse one YAML document with ``SafeLoader`` (no aliases).

    Raises:
        ConfigError: ``line N: ...`` for an alias or nesting deeper than Python's recursion limit.
        yaml.YAMLError: malformed YAML.
    """
    try:
        return yaml.load(text, Loader=SafeLoader)  # a SafeLoader subclass
    except RecursionError:
        raise ConfigError("line 1: nested too deeply (lists or mappings within each other)") from None


def line_map(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path of a YAML document to the 1-based line it is written on."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                if key in seen:
                    raise ConfigError(
                        f"line {key_node.start_mark.line + 1}: {'.'.join((*path, key))}: duplicate key"
                    )
                seen.add(key)
                lines[(*path, key)] = key_node.start_mark.line + 1
                walk(value_node, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*path, str(i))] = item.start_mark.line + 1
                walk(item, (*path, str(i)))

    try:
        root = yaml.compose(text, Loader=SafeLoader)
    except RecursionError:
        raise ConfigError("line 1: nested too deeply (lists or mappings within each other)") from None
    if root is not None:
        walk(root, ())
    return lines


def read_config_text(path: Path) -> str:
    """The text of a config file: a regular, readable UTF-8 file of at most ``MAX_CONFIG_BYTES``.

    Raises:
        ConfigError: a missing file, a FIFO/device/directory (opening a FIFO would block), an unreadable or
            oversized file, or bytes that are not UTF-8.
    """
    import stat

    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path}: not a regular file (a directory, FIFO or device); expected a YAML file")
    if info.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: {info.st_size} bytes; a config file is at most {MAX_CONFIG_BYTES} bytes "
            f"(is it a data file?)"
        )
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
        ) from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """``train.learning_rate=3e-5`` -> (["train", "learning_rate"], 3e-05)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. train.epochs=2")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {item!r}: empty key part")
    try:
        value = yaml_load(text) if text.strip() else None
    except ConfigError as exc:
        raise ConfigError(f"override {item!r}: {str(exc).split(': ', 1)[-1]}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({exc.__class__.__name__})") from None
    return parts, value


def apply_override(raw: dict[str, Any], parts: list[str], value: Any) -> None:
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif isinstance(child, str) and part == "task":
            child = node[part] = {"name": child}
        elif not isinstance(child, dict):
            raise ConfigError(f"override {'.'.join(parts)}: {part} is not a section")
        node = child
    node[parts[-1]] = value
