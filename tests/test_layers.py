"""The package layers of docs/design.md hold: no package imports one on its own or a higher
layer (so the torch core never pulls in Ray, the sandbox never pulls in torch, and the
dashboard runs on the job state alone)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAYER = {"errors": 0, "dllm": 1, "sandbox": 2, "jobstate": 2, "tasks": 3, "rollout": 3, "learner": 3,
         "modelprep": 4, "evaluation": 4, "dashboard": 4, "orchestrator": 5}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & set(LAYER)


def test_every_project_package_is_placed_in_a_layer():
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests", "bench", "deploy", "scripts"}
    assert packages <= set(LAYER), packages - set(LAYER)


def test_no_package_imports_its_own_layer_or_above():
    wrong = []
    for package, layer in LAYER.items():
        files = [REPO / "errors.py"] if package == "errors" else sorted((REPO / package).rglob("*.py"))
        for path in files:
            for name in _imports(path) - {package}:
                if LAYER[name] >= layer:
                    wrong.append(f"{path.relative_to(REPO)} imports {name}")
    assert not wrong, wrong
