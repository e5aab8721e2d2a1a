"""docker-compose.yaml read as Compose reads it: a YAML loader that refuses duplicate keys and undefined
aliases, then Compose's variable interpolation on every string value. The static deploy tests validate
the result against the compose specification, and the stack tests run its services' environment and
commands, so the file users deploy and the stack that is tested come from one place."""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Mapping

import yaml

COMPOSE_FILE = Path(__file__).resolve().parent.parent / "docker-compose.yaml"
MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.constructor.ConstructorError):
    pass


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that, like Compose's loader, rejects a key given twice in one mapping. Keys brought in
    by a merge (``<<: *anchor``) may be overridden, as YAML's merge allows; undefined aliases already fail
    in the composer."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise DuplicateKeyError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


_VARIABLE = re.compile(r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
                       r"|\$(?P<plain>[A-Za-z_][A-Za-z0-9_]*)")


class InterpolationError(ValueError):
    pass


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's variable syntax: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+alternative}``, ``${VAR+alternative}``."""
    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("plain")
        current, op, arg = env.get(name), match.group("op"), match.group("arg") or ""
        unset_or_empty = not current
        if op == ":-":
            return arg if unset_or_empty else current
        if op == "-":
            return arg if current is None else current
        if op in (":?", "?") and (unset_or_empty if op == ":?" else current is None):
            raise InterpolationError(f"required variable {name} is missing a value: {arg}")
        if op == ":+":
            return "" if unset_or_empty else arg
        if op == "+":
            return "" if current is None else arg
        return current or ""
    return _VARIABLE.sub(replace, value)


def _interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, env) for key, value in node.items()}
    return node


def load_compose(env: Mapping[str, str] | None = None, text: str | None = None) -> dict[str, Any]:
    """The compose file as Compose sees it, variables taken from ``env`` (default: none set)."""
    raw = yaml.load(COMPOSE_FILE.read_text() if text is None else text, Loader=StrictLoader)
    return _interpolate_tree(raw, env or {})


def service_environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment`` (mapping or list form) as strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def service_command(service: dict[str, Any]) -> list[str]:
    """A service's ``command`` as an argv (Compose splits a string command like a shell would)."""
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]
