"""The layering of docs/architecture.md, checked on the source: no import loops, no private name imported
from another module, and each layer importing only the layers below it. Imports under
``if TYPE_CHECKING:`` are annotations only and are not counted."""

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tunesift"

# layer -> the layers it may import (besides itself); a top-level module is its own layer
ALLOWED = {
    "io": set(),
    "output": {"io"},
    "settings": set(),
    "registry": {"settings"},
    "embed": {"io", "output", "executor"},
    "ot": {"io"},
    "executor": {"registry", "ot", "io"},
    "pool": {"io", "embed", "ot", "executor", "output", "registry", "settings", "cli"},
    "finetune": {"io", "embed"},
    "warmup": {"io", "embed"},
    "rec": {"io", "embed", "pool", "finetune", "executor", "output", "registry", "settings", "cli"},
    "bench": {"io", "embed", "pool", "rec", "warmup", "finetune", "executor", "output", "registry", "settings",
              "cli"},
    "cli": {"io", "output", "executor", "(package)"},
    "demo": {"io", "pool", "rec", "bench", "cli"},
    "__main__": {"cli"},
    "(package)": {"io", "pool", "rec"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        parts = ("tunesift", *f.relative_to(SRC).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _imports():
    """(module -> the tunesift modules it imports, [(module, private name, its module)])."""
    mods = _modules()

    def resolve(name: str) -> str:
        while name not in mods:
            name = name.rpartition(".")[0]
        return name

    edges, private = defaultdict(set), []
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                if not base.startswith("tunesift"):
                    continue
                for alias in node.names:
                    target = resolve(f"{base}.{alias.name}" if f"{base}.{alias.name}" in mods else base)
                    if target != mod:
                        edges[mod].add(target)
                        if alias.name.startswith("_") and not alias.name.startswith("__"):
                            private.append((mod, alias.name, target))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("tunesift") and resolve(alias.name) != mod:
                        edges[mod].add(resolve(alias.name))
    return mods, edges, private


def _cycles(nodes, edges) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(n):
        index[n] = low[n] = counter[0]
        counter[0] += 1
        stack.append(n)
        on.add(n)
        for w in edges.get(n, ()):
            if w not in index:
                visit(w)
                low[n] = min(low[n], low[w])
            elif w in on:
                low[n] = min(low[n], index[w])
        if low[n] == index[n]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == n:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for n in sorted(nodes):
        if n not in index:
            visit(n)
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return "(package)" if len(parts) == 1 else parts[1]


def test_no_import_loops():
    mods, edges, _ = _imports()
    assert _cycles(mods, edges) == []


def test_no_private_name_is_imported_from_another_module():
    _, _, private = _imports()
    assert private == []


def test_each_layer_imports_only_the_layers_below_it():
    mods, edges, _ = _imports()
    wrong = sorted(f"{m} imports {t}" for m, targets in edges.items() for t in targets
                   if _layer(t) != _layer(m) and _layer(t) not in ALLOWED[_layer(m)])
    assert wrong == []
    assert set(ALLOWED) >= {_layer(m) for m in mods}  # a new layer is placed in the table


def test_the_checks_can_fail():
    # a loop and a private import in a two-module graph are found
    assert _cycles({"a", "b"}, {"a": {"b"}, "b": {"a"}}) == [["a", "b"]]
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import tunesift.x\nimport tunesift.y\n")
    names = [a.name for n in _runtime_nodes(tree) if isinstance(n, ast.Import) for a in n.names]
    assert names == ["tunesift.y"]
