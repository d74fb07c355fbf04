"""The params reference, ``docs/params.md``, written from the schema in :mod:`srpipe.config`:
every key with its type, default, allowed values and description, so that it never drifts from
the code. A key without a description in the schema takes its comment in ``params.yaml``.

``python -m srpipe.reference`` rewrites the file; a test fails when it is stale.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any, Iterator, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .config import Params

PAGE = Path("docs/params.md")
BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "at least {} item(s)"}


def keys(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every leaf key of ``model`` (``train.lr``, ``degradation.second.blur_prob``) with its field."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from keys(annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def type_text(annotation: Any) -> str:
    """A YAML reader's name for a type: ``int``, ``float or null``, ``list of text``, ``[float, float]``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " or ".join(dict.fromkeys(type_text(type(v)) for v in args))
    if origin in (Union, types.UnionType):
        parts = [type_text(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {type_text(args[0])}"
    if origin is tuple:
        return "[" + ", ".join(type_text(a) for a in args) + "]"
    if origin is dict:
        return f"mapping of {type_text(args[0])} to {type_text(args[1])}"
    return {str: "text", int: "integer", float: "number", bool: "true or false"}.get(annotation, "any")


def allowed_text(field: FieldInfo) -> str:
    """The values a key takes: a Literal's values (of a list's items too), or its bounds."""
    annotation = field.annotation
    for candidate in (annotation, *get_args(annotation)):
        if get_origin(candidate) is Literal:
            return ", ".join(f"`{v}`" for v in get_args(candidate))
        if get_origin(candidate) is list and get_origin(get_args(candidate)[0]) is Literal:
            return "items from " + ", ".join(f"`{v}`" for v in get_args(get_args(candidate)[0]))
    bounds = []
    for item in field.metadata:
        for attr, sign in BOUNDS.items():
            if getattr(item, attr, None) is not None:
                value = getattr(item, attr)
                bounds.append(sign.format(value) if "{}" in sign else f"{sign} {value:g}")
    return ", ".join(bounds)


def inline(value: Any) -> str:
    """A value as it is written in params.yaml, on one line."""
    if isinstance(value, BaseModel):
        value = value.model_dump()
    value = list(value) if isinstance(value, tuple) else value
    value = [list(v) if isinstance(v, tuple) else v for v in value] if isinstance(value, list) else value
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix(" ...")


def yaml_comments(text: str) -> dict[str, str]:
    """The comment at the end of each key's line in a params.yaml, by dotted key."""
    comments, path = {}, []
    for line in text.splitlines():
        match = re.match(r"^( *)([A-Za-z_][A-Za-z0-9_]*):(.*)$", line)
        if not match:
            continue
        depth = len(match.group(1)) // 2
        path = [*path[:depth], match.group(2)]
        if "#" in match.group(3):
            comments[".".join(path)] = match.group(3).split("#", 1)[1].strip()
    return comments


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(params_yaml: str) -> str:
    """docs/params.md for this schema and the project's params.yaml (its values and comments)."""
    comments, values = yaml_comments(params_yaml), yaml.safe_load(params_yaml) or {}
    lines = ["# Parameters", "",
             "Every key of `params.yaml`, written from the schema in `srpipe/config.py` by "
             "`python -m srpipe.reference` (a test fails when this page is stale). *default* is what a key is "
             "when params.yaml leaves it out; *params.yaml* is the project's own value. Override any key for "
             "one run with `--set key=value` (a stage command) or `-S key=value` (`dvc exp run`).", ""]
    section = None
    for key, field in keys(Params):
        top = key.split(".")[0] if "." in key else "top level"
        if top != section:
            section = top
            lines += ["", f"## {section}", "", "| key | type | default | params.yaml | allowed | description |",
                      "|---|---|---|---|---|---|"]
        default = field.default_factory() if field.default_factory is not None else field.default
        project = values
        for part in key.split("."):
            project = project.get(part, "(left out)") if isinstance(project, dict) else "(left out)"
        description = field.description or comments.get(key, "")
        lines.append(f"| `{key}` | {type_text(field.annotation)} | `{cell(inline(default))}` | "
                     f"`{cell(inline(project))}` | {cell(allowed_text(field))} | {cell(description)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
    (root / PAGE).write_text(render((root / "params.yaml").read_text()))
    print(f"wrote {root / PAGE}")


if __name__ == "__main__":
    main()
