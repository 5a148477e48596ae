"""Reads terraform/ with python-hcl2 and evaluates the small part of HCL its job definitions and
outputs use, so that tests can check what Terraform would send without a provider or a cloud.

python-hcl2 keeps a string literal with its quotes (`"\"text\""`) and an expression as
`"${expr}"`; blocks are lists of dicts. The evaluator knows variables (from their defaults or a
tfvars file), locals, `tostring`, `jsonencode`, `[for x in list : "template"]`, and the resource
attributes a test supplies (e.g. the bucket's name); anything else raises `Unresolved`, so a test
never passes on an expression it did not understand. What it cannot know, the functions that read
files, `terraform console` evaluates (`console_value`): Terraform's own implementation, without
a provider or a cloud.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

from tests.conftest import REPO_ROOT

TERRAFORM_DIR = REPO_ROOT / "terraform"
INTERPOLATION = re.compile(r"\$\{")
FOR_LIST = re.compile(r"^\[for (\w+) in (.+?) : (.+)\]$", re.S)
CALL = re.compile(r"^(\w+)\((.*)\)$", re.S)
# `google_x.name`, `random_x.name`, `terraform_data.name` and `ephemeral.random_x.name`.
REFERENCE = re.compile(
    r"\b((?:ephemeral\.)?(?:google|random)_[a-z0-9_]+|terraform_data)\.([a-z0-9_]+)\b"
)
LOCAL_REFERENCE = re.compile(r"\blocal\.([a-z0-9_]+)")
VARIABLE_REFERENCE = re.compile(r"\bvar\.[a-z0-9_]+")
# A reference to a resource attribute, as far as its path goes: `google_x.name.attr[0].field`.
ATTRIBUTE_PATH = re.compile(
    r"\b(?:ephemeral\.)?(?:(?:google|random)_[a-z0-9_]+|terraform_data)\.[a-z0-9_]+(?:\.[a-z0-9_]+|\[\d+\])*"
)


class Unresolved(Exception):
    """An expression the evaluator does not know how to compute."""


def unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def clean(value: Any) -> Any:
    """python-hcl2's tree without its bookkeeping keys, with unquoted keys."""
    if isinstance(value, dict):
        return {
            unquote(key): clean(item) for key, item in value.items() if not key.startswith("__")
        }
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

    def ephemerals(self) -> dict[tuple[str, str], dict]:
        """Ephemeral resources, keyed as their references spell them: ("ephemeral.random_x",
        name)."""
        return {
            (f"ephemeral.{kind}", name): body
            for item in self._top("ephemeral")
            for kind, named in item.items()
            for name, body in named.items()
        }

    def references(self, value: Any) -> set[tuple[str, str]]:
        """The resources `value` refers to, directly or through the locals it uses (depends_on
        too)."""
        found: set[tuple[str, str]] = set()
        seen_locals: set[str] = set()
        pending = [value]
        while pending:
            texts = [expr for text in all_strings(pending.pop()) for expr in interpolations(text)]
            for expr in texts:
                found.update(REFERENCE.findall(expr))
                for name in set(LOCAL_REFERENCE.findall(expr)) - seen_locals:
                    seen_locals.add(name)
                    pending.append(self.locals[name])
        return found

    def depends_on_transitively(self, node: tuple[str, str]) -> set[tuple[str, str]]:
        """Every resource Terraform creates before `node`: the closure of its references."""
        bodies = {**self.resources(), **self.ephemerals()}
        closure: set[tuple[str, str]] = set()
        pending = [node]
        while pending:
            for reference in self.references(bodies[pending.pop()]):
                if reference not in closure and reference in bodies:
                    closure.add(reference)
                    pending.append(reference)
        return closure


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
            return [
                self.expression(body, {**scope, name: item})
                for item in self.expression(source, scope)
            ]
        call = CALL.match(expr)
        if call and call.group(1) == "tostring":
            return str(self.expression(call.group(2), scope))
        if call and call.group(1) == "jsonencode":
            return json.dumps(self.object(call.group(2), scope), separators=(",", ":"))
        if expr in self.attributes:
            return self.attributes[expr]
        raise Unresolved(expr)

    def object(self, expr: str, scope: dict[str, Any]) -> Any:
        """An object or string constructor `{ key = value, ... }` of HCL, values evaluated."""
        expr = expr.strip()
        if not expr.startswith("{"):
            return self.expression(expr, scope)
        body, result = expr[1:-1].strip(), {}
        while body:
            key, _, rest = body.partition("=")
            value, body = split_object_value(rest.strip())
            result[key.strip()] = self.object(value, scope)
        return result

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


def split_object_value(text: str) -> tuple[str, str]:
    """(the first value of an object constructor's body, what follows it after a comma)."""
    depth, quoted = 0, False
    for index, char in enumerate(text):
        if char == '"' and text[index - 1 : index] != "\\":
            quoted = not quoted
        elif not quoted and char in "{[(":
            depth += 1
        elif not quoted and char in "}])":
            depth -= 1
        elif not quoted and depth == 0 and char in ",\n":
            return text[:index].strip(), text[index + 1 :].strip()
    return text.strip(), ""


def terraform_binary() -> str | None:
    return shutil.which("terraform")


def console_value(expression: str, module_dir: Path = TERRAFORM_DIR) -> Any:
    """`expression` evaluated by `terraform console`, in an empty working directory so that no
    provider is needed; `path.module` stands for `module_dir`. Raises ValueError with Terraform's
    own message when Terraform rejects it (as `plan` would)."""
    binary = terraform_binary()
    if binary is None:
        raise RuntimeError(
            "terraform is not on PATH: install Terraform >= 1.11"
            " (README, Deploying to Google Cloud)"
        )
    text = expression.replace("${path.module}", str(module_dir)).replace(
        "path.module", json.dumps(str(module_dir))
    )
    result = subprocess.run(
        [binary, "console"],
        input=f"jsonencode({text})\n",
        capture_output=True,
        text=True,
        cwd=module_dir.parent,
        env={"PATH": "/usr/bin:/bin", "TF_CLI_CONFIG_FILE": "/dev/null", "CHECKPOINT_DISABLE": "1"},
        timeout=60,
    )
    if result.returncode != 0:
        raise ValueError(
            f"terraform console rejected {expression}: "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    return json.loads(json.loads(result.stdout.strip()))


def inline(
    terraform: Terraform,
    expr: str,
    variables: dict[str, str],
    attributes: dict[str, Any] | None = None,
) -> str:
    """`expr` with its locals inlined, its variables replaced by the HCL literals of `variables`
    ({"var.x": literal}) and resource attributes by `attributes` or a sample string: an
    expression `terraform console` can evaluate without a provider."""
    attributes = attributes or {}
    for _ in range(20):
        before = expr
        expr = LOCAL_REFERENCE.sub(
            lambda match: "(" + hcl_of(terraform.locals[match.group(1)]) + ")", expr
        )
        if expr == before:
            break
    expr = VARIABLE_REFERENCE.sub(lambda match: variables[match.group(0)], expr)
    return ATTRIBUTE_PATH.sub(
        lambda match: json.dumps(
            attributes.get(match.group(0), "sample-" + match.group(0).replace(".", "-"))
        ),
        expr,
    )


def hcl_of(raw: Any) -> str:
    """python-hcl2's value as HCL source: `${expr}` as expr, a quoted string as it is."""
    if isinstance(raw, dict):
        return (
            "{"
            + ", ".join(f"{json.dumps(key)} = {hcl_of(value)}" for key, value in raw.items())
            + "}"
        )
    if isinstance(raw, list):
        return "[" + ", ".join(hcl_of(item) for item in raw) + "]"
    if isinstance(raw, str) and raw.startswith("${") and interpolations(raw)[:1] == [raw[2:-1]]:
        return raw[2:-1]
    if isinstance(raw, str):
        return raw if raw.startswith('"') else json.dumps(raw)
    return json.dumps(raw)


def hcl_variables(
    terraform: Terraform, tfvars: dict[str, Any], overrides: dict[str, Any]
) -> dict[str, str]:
    """{"var.x": HCL literal} for every variable: `overrides`, else `tfvars`, else the default."""
    values = {}
    for name, body in terraform.variables.items():
        raw = overrides.get(name, tfvars.get(name, body.get("default")))
        if raw is None:
            raise Unresolved(f"var.{name} has no default and no value")
        is_literal = isinstance(raw, str) and raw.startswith('"') or not isinstance(raw, str)
        values[f"var.{name}"] = raw if isinstance(raw, str) and is_literal else json.dumps(raw)
    return values
