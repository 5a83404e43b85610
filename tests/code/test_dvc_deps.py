"""dvc.yaml lists, for each stage, every conceptlab module its command runs, and no other: editing any
code that can change a stage's outputs re-runs that stage (and what follows), and nothing else.

The modules are found statically from the command's source (every import statement, including those
inside functions, so imports made only when a stage runs count too). `components/cli.py` and
`components/pipeline.py` dispatch to every stage: there only the stage's own function and what it
calls count, with the module's import-time imports.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("components", "flows")
DISPATCHERS = {"components.cli", "components.pipeline"}


def module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_in(nodes: list[ast.AST], skip_functions: bool) -> set[str]:
    """conceptlab modules imported by these statements (and those nested in them), and the names they bind."""
    found, stack = set(), list(nodes)
    while stack:
        node = stack.pop()
        if is_type_checking(node) or (
            skip_functions and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        ):
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if module_file(f"{node.module}.{a.name}")}
        stack.extend(ast.iter_child_nodes(node))
    return {m for m in found if m.split(".")[0] in PACKAGES and module_file(m)}


def module_aliases(tree: ast.Module) -> dict[str, str]:
    """Names bound to conceptlab modules anywhere in the file (`from components import pipeline`)."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                if module_file(f"{node.module}.{a.name}"):
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
    return {alias: m for alias, m in aliases.items() if m.split(".")[0] in PACKAGES and module_file(m)}


def closure(entry: str, function: str) -> set[str]:
    """Files of the conceptlab modules that running ``entry.function`` can execute."""
    seen_modules, seen_functions, files = set(), set(), set()
    todo: list[tuple[str, str | None]] = [(entry, function)]
    while todo:
        name, fn = todo.pop()
        if fn is None and name not in DISPATCHERS:
            if name in seen_modules:
                continue
            seen_modules.add(name)
        elif (name, fn) in seen_functions:
            continue
        seen_functions.add((name, fn))
        path = module_file(name)
        tree = ast.parse(path.read_text())
        if path.stat().st_size:  # an empty package __init__ runs no code
            files.add(path.relative_to(ROOT).as_posix())
        for parent in [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]:
            todo.append((parent, None))
        if name not in DISPATCHERS:
            todo += [(m, None) for m in imports_in(tree.body, skip_functions=False)]
            continue
        # A dispatcher: its import-time imports, then the function, what it calls in this module and
        # the `module.function` it names in other dispatchers.
        todo += [(m, None) for m in imports_in(tree.body, skip_functions=True)]
        if fn is None:
            continue
        functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        aliases = module_aliases(tree)
        body = functions[fn]
        todo += [(m, None) for m in imports_in([body], skip_functions=False)]
        for node in ast.walk(body):
            if isinstance(node, ast.Name) and node.id in functions and node.id != fn:
                todo.append((name, node.id))
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                target = aliases[node.value.id]
                todo.append((target, node.attr if target in DISPATCHERS else None))
    return files


def cli_commands(module: str) -> dict[str, str]:
    """Typer command name -> function name, from the `@app.command()` decorators."""
    tree = ast.parse(module_file(module).read_text())
    commands = {}
    for node in tree.body:
        for deco in getattr(node, "decorator_list", []):
            if isinstance(deco, ast.Call) and ast.unparse(deco.func) == "app.command":
                named = deco.args[0].value if deco.args else node.name.replace("_", "-")
                commands[named] = node.name
    return commands


def stage_code_deps() -> dict[str, set[str]]:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entry = scripts["conceptlab"].split(":")[0]
    commands = cli_commands(entry)
    expected = {}
    for stage, spec in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        program, command = spec["do"]["cmd"].split()[:2]
        assert program == "conceptlab", f"dvc.yaml stage {stage} runs {program}: teach this test about it"
        expected[stage] = closure(entry, commands[command])
    return expected


def listed_code_deps(stage: str) -> set[str]:
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["do"]["deps"]
    return {d for d in deps if d.split("/")[0] in PACKAGES and d.endswith(".py")}


STAGES = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_lists_exactly_the_code_it_runs(stage):
    expected = stage_code_deps()[stage]
    listed = listed_code_deps(stage)
    assert not expected - listed, (
        f"dvc.yaml stage {stage}: add these deps (code the stage runs): {sorted(expected - listed)}"
    )
    assert not listed - expected, (
        f"dvc.yaml stage {stage}: these deps are code it never runs: {sorted(listed - expected)}"
    )


def test_the_closure_follows_imports_made_inside_functions():
    """The finder itself: the train command reaches train.py through pipeline.run_train's local import,
    and the modules train.py imports; curate does not reach train.py."""
    commands = cli_commands("components.cli")
    train = closure("components.cli", commands["train"])
    assert {"components/train.py", "components/lora.py", "components/io.py", "components/config.py"} <= train
    assert "components/train.py" not in closure("components.cli", commands["curate"])
