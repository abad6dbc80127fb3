"""Read the Terraform modules with python-hcl2 (no terraform binary or providers needed).

Used by the module README generator (``python -m deploy.hcl``), the autoscaling simulator
and the tests that hold the modules to ``celery_sqs_ddb``'s schema and AWS action list.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import hcl2

TERRAFORM = Path(__file__).resolve().parent / "terraform"
MODULES = TERRAFORM / "modules"
BEGIN, END = "<!-- BEGIN_TF_DOCS -->", "<!-- END_TF_DOCS -->"


def unquote(value: Any) -> Any:
    """Strip python-hcl2's quoting: '"x"' -> 'x'; lists and dicts recursively."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    if isinstance(value, list):
        return [unquote(v) for v in value]
    if isinstance(value, dict):
        return {unquote(k): unquote(v) for k, v in value.items() if k not in ("__is_block__", "__comments__")}
    return value


def load(path: Path) -> dict[str, Any]:
    with open(path) as fh:
        return hcl2.load(fh)


def blocks(directory: Path, kind: str) -> dict[str, Any]:
    """All blocks of one kind (``variable``, ``output``, ``locals``...) in a module, by name."""
    found: dict[str, Any] = {}
    for path in sorted(directory.glob("*.tf")):
        for block in load(path).get(kind, []):
            if kind == "locals":
                found.update(unquote(block))
            else:
                found.update(unquote(block))
    return found


def resources(directory: Path, kind: str = "resource") -> dict[tuple[str, str], dict[str, Any]]:
    """``{(type, name): body}`` of every resource (or data source) in a module."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        for block in load(path).get(kind, []):
            for rtype, named in block.items():
                for name, body in named.items():
                    out[(unquote(rtype), unquote(name))] = body
    return out


def default(directory: Path, variable: str) -> Any:
    return blocks(directory, "variable")[variable].get("default")


def _hcl(value: Any) -> str:
    """A value as HCL shows it: true/false/null, ${expr} unwrapped, JSON-ish collections."""
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        return value[2:-1]
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _cell(text: Any) -> str:
    text = "" if text is None else str(text)
    return re.sub(r"\s+", " ", text.replace("|", "\\|")).strip()


def docs(directory: Path) -> str:
    """terraform-docs style Inputs/Outputs tables."""
    lines = ["## Inputs", "", "| Name | Description | Type | Default |", "|---|---|---|---|"]
    for name, body in blocks(directory, "variable").items():
        kind = _hcl(body.get("type", "any"))
        dflt = _hcl(body["default"]) if "default" in body else "(required)"
        lines.append(f"| {name} | {_cell(body.get('description'))} | `{_cell(kind)}` | `{_cell(dflt)}` |")
    lines += ["", "## Outputs", "", "| Name | Description |", "|---|---|"]
    for name, body in blocks(directory, "output").items():
        lines.append(f"| {name} | {_cell(body.get('description'))} |")
    return "\n".join(lines)


def render_readme(readme: Path, directory: Path) -> str:
    text = readme.read_text() if readme.exists() else f"# {directory.name}\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{docs(directory)}\n{END}{tail}"


def main() -> int:
    for directory in sorted(MODULES.iterdir()):
        readme = directory / "README.md"
        readme.write_text(render_readme(readme, directory))
        print(f"wrote {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
