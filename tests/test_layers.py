"""The layers, enforced: what each package may import, and no import cycles anywhere.

Every ``import`` statement counts, also those inside functions: a lazy import is still a dependency.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lora_studio", "studio", "ui", "workers")
ML = ("torch", "transformers", "peft", "bitsandbytes", "datasets", "accelerate", "safetensors", "gguf")
# (package, what it must never import, why)
CONTRACTS = (
    ("studio", ("PySide6", "pyqtgraph", "ui", "lora_studio", "workers"), "the core runs without Qt and below its workers"),
    ("ui", (*ML, "studio.commands", "workers", "lora_studio"), "the window opens in a second and never loads torch"),
    ("workers", ("PySide6", "pyqtgraph", "ui", "lora_studio"), "workers run under the ML runtime, without Qt"),
    # Inside the core: what reads a dataset, writes an export or scores answers stands below training and shares
    # its base concerns (trust checks, load errors, safetensors reading, disk errors) from below: studio.safety,
    # studio.errors, studio.safetensors_io, studio.fsutil, studio.checkpoint (a run's checkpoint folders). (studio.inference
    # loads the base model through training's own loader: it stands above it.)
    *((package, ("studio.train",), "it stands below training and imports none of it")
      for package in ("studio.data", "studio.export", "studio.playground", "studio.scoring", "studio.evalreport",
                      "studio.chat_client")),
)


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports, absolute, from every import statement in the file."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # "from pkg import module"
    return found


MODULES = _modules()
GRAPH = {name: {m for m in _imports(name, path) if m in MODULES and m != name} for name, path in MODULES.items()}


def _hits(imported: str, forbidden: tuple[str, ...]) -> bool:
    return any(imported == f or imported.startswith(f + ".") for f in forbidden)


@pytest.mark.parametrize("package,forbidden,why", CONTRACTS, ids=[c[0] for c in CONTRACTS])
def test_package_never_imports_what_its_layer_forbids(package, forbidden, why):
    broken = sorted(f"{name} imports {imported}" for name, path in MODULES.items()
                    if name == package or name.startswith(package + ".")
                    for imported in _imports(name, path) if _hits(imported, forbidden))
    assert not broken, f"{package} must not import {', '.join(forbidden)} ({why}):\n" + "\n".join(broken)


def test_no_import_cycles():
    """Tarjan's strongly connected components over every import between the project's modules."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    # A package's __init__ that hands on its modules' names is not a cycle with them.
    cycles = [c for c in cycles if not all(m == c[0] or m.startswith(c[0] + ".") for m in c)]
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checks_see_real_imports():
    """The graph is not empty: the layer checks above would catch a forbidden import."""
    assert "studio.planner" in GRAPH["ui.session"] and "studio.events" in GRAPH["workers.train"]
    assert _hits("torch.nn", ML) and not _hits("torchvision_like", ("torch",))
