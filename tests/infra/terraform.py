"""Reads terraform/ with python-hcl2 and evaluates the small part of HCL its job definitions and
outputs use, so that tests can check what Terraform would send without a provider or a cloud.

python-hcl2 keeps a string literal with its quotes (`"\"text\""`) and an expression as
`"${expr}"`; blocks are lists of dicts. The evaluator knows variables (from their defaults or a
tfvars file), locals, `tostring`, `[for x in list : "template"]`, and the resource attributes a
test supplies (e.g. the bucket's name); anything else raises `Unresolved`, so a test never passes
on an expression it did not understand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

from tests.conftest import REPO_ROOT

TERRAFORM_DIR = REPO_ROOT / "terraform"
INTERPOLATION = re.compile(r"\$\{")
FOR_LIST = re.compile(r"^\[for (\w+) in (.+?) : (.+)\]$", re.S)
CALL = re.compile(r"^(\w+)\((.*)\)$", re.S)


class Unresolved(Exception):
    """An expression the evaluator does not know how to compute."""


def unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def clean(value: Any) -> Any:
    """python-hcl2's tree without its bookkeeping keys, with unquoted keys."""
    if isinstance(value, dict):
        return {unquote(key): clean(item) for key, item in value.items() if not key.startswith("__")}
    if isinstance(value, list):
        return [clean(item) for item in value]
    return value


def interpolations(text: str) -> list[str]:
    """The expressions inside every `${...}` of `text`, outermost first, nested ones too."""
    found = []
    for match in INTERPOLATION.finditer(text):
        end = closing_brace(text, match.end())
        found.append(text[match.end() : end])
    return found


def closing_brace(text: str, start: int) -> int:
    depth = 1
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    raise ValueError(f"unbalanced braces in {text!r}")


@dataclass
class Terraform:
    files: dict[str, dict]

    @classmethod
    def load(cls, directory: Path = TERRAFORM_DIR) -> Terraform:
        files = {}
        for path in sorted(directory.glob("*.tf")):
            with path.open() as handle:
                files[path.name] = clean(hcl2.load(handle))
        return cls(files)

    def _top(self, kind: str) -> list[dict]:
        return [item for tree in self.files.values() for item in tree.get(kind, [])]

    @property
    def variables(self) -> dict[str, dict]:
        return {name: body for item in self._top("variable") for name, body in item.items()}

    @property
    def locals(self) -> dict[str, Any]:
        return {name: value for item in self._top("locals") for name, value in item.items()}

    @property
    def outputs(self) -> dict[str, dict]:
        return {name: body for item in self._top("output") for name, body in item.items()}

    def resources(self, resource_type: str | None = None) -> dict[tuple[str, str], dict]:
        found = {}
        for item in self._top("resource"):
            for kind, named in item.items():
                for name, body in named.items():
                    if resource_type in (None, kind):
                        found[(kind, name)] = body
        return found

    def resource(self, resource_type: str, name: str) -> dict:
        return self.resources(resource_type)[(resource_type, name)]


def all_strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in [key, *all_strings(item)]]
    if isinstance(value, list):
        return [text for item in value for text in all_strings(item)]
    return [value] if isinstance(value, str) else []


def block(body: dict, name: str) -> dict:
    """The single block `name` of a resource body."""
    (only,) = body[name]
    return only


@dataclass
class Evaluator:
    terraform: Terraform
    variables: dict[str, Any]
    attributes: dict[str, Any] = field(default_factory=dict)

    def value(self, raw: Any, scope: dict[str, Any] | None = None) -> Any:
        scope = scope or {}
        if isinstance(raw, dict):
            return {self.value(key, scope): self.value(item, scope) for key, item in raw.items()}
        if isinstance(raw, list):
            return [self.value(item, scope) for item in raw]
        if not isinstance(raw, str):
            return raw
        if raw.startswith("${") and closing_brace(raw, 2) == len(raw) - 1:
            return self.expression(raw[2:-1], scope)
        return self.template(unquote(raw), scope)

    def template(self, text: str, scope: dict[str, Any]) -> str:
        out, position = [], 0
        for match in INTERPOLATION.finditer(text):
            if match.start() < position:
                continue
            end = closing_brace(text, match.end())
            out.append(text[position : match.start()])
            out.append(str(self.expression(text[match.end() : end], scope)))
            position = end + 1
        return "".join(out) + text[position:]

    def expression(self, expr: str, scope: dict[str, Any]) -> Any:
        expr = expr.strip()
        if expr.startswith('"') and expr.endswith('"'):
            return self.template(expr[1:-1], scope)
        if expr in scope:
            return scope[expr]
        if expr.startswith("var."):
            return self._variable(expr[4:])
        if expr.startswith("local."):
            return self._local(expr[6:], scope)
        loop = FOR_LIST.match(expr)
        if loop:
            name, source, body = loop.groups()
            return [self.expression(body, {**scope, name: item}) for item in self.expression(source, scope)]
        call = CALL.match(expr)
        if call and call.group(1) == "tostring":
            return str(self.expression(call.group(2), scope))
        if expr in self.attributes:
            return self.attributes[expr]
        raise Unresolved(expr)

    def _variable(self, name: str) -> Any:
        if name in self.variables:
            return self.variables[name]
        declared = self.terraform.variables[name]
        if "default" not in declared:
            raise Unresolved(f"var.{name} has no default and no value")
        return self.value(declared["default"])

    def _local(self, name: str, scope: dict[str, Any]) -> Any:
        if f"local.{name}" in self.attributes:
            return self.attributes[f"local.{name}"]
        return self.value(self.terraform.locals[name], scope)
