"""The Python package's layering, read from the source with ``ast``: mlpcore's modules import
each other without cycles (function-local imports included), only model.py and layers.py touch
the native network handle ``._net``, and no module imports another's private names."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "mlpcore"
# Modules that may hold the native handle: the model owns it, each layer keeps a reference.
NET_OWNERS = {"model", "layers"}
# Function-local imports of mlpcore modules that are there on purpose: the CLI loads the
# benchmark harness only for `mlpcore bench`, and the benchmark child processes import
# mlpcore only in the contender that measures it.
LAZY_ALLOWED = {("cli", "bench.harness")}
LAZY_ALLOWED_FROM = ("bench.",)


def _modules():
    """{dotted module name relative to the package ("model", "bench.harness", "__init__"):
    path}; the native extension counts through its stub (``_core.pyi``)."""
    out = {}
    stubs = [p for p in PACKAGE.rglob("*.pyi") if not p.with_suffix(".py").exists()]
    for path in sorted([*PACKAGE.rglob("*.py"), *stubs]):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _package_of(name: str, path: Path) -> list:
    """The package a module's relative imports start from, as a list of parts."""
    parts = [] if name == "__init__" else name.split(".")
    return parts if path.name == "__init__.py" else parts[:-1]


def _resolve(target: list):
    """The module a dotted target (relative to the package) names, or None if it is not one
    of the package's Python modules (e.g. the native ``_core``)."""
    name = ".".join(target) if target else "__init__"
    return name if name in MODULES else None


def _imports(name: str, path: Path):
    """(imported module, function-local?, imported names) for every mlpcore-internal import."""
    tree = ast.parse(path.read_text(), filename=str(path))
    base = _package_of(name, path)
    top_level = {id(node) for node in tree.body}
    # imports under `if` / `try` at module level are still top-level
    for node in tree.body:
        if isinstance(node, (ast.If, ast.Try)):
            top_level.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        local = id(node) not in top_level
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "mlpcore":
                    module = _resolve(parts[1:])
                    if module is not None:
                        found.append((module, local, []))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                start = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                parts = start + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "mlpcore":
                parts = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:
                submodule = _resolve(parts + [alias.name])
                if submodule is not None:  # `from . import callbacks`: the module itself
                    found.append((submodule, local, []))
                else:
                    module = _resolve(parts)
                    if module is not None:
                        found.append((module, local, [alias.name]))
    return found


def _graph():
    graph = {}
    for name, path in MODULES.items():
        graph[name] = sorted({module for module, _, _ in _imports(name, path)} - {name})
    return graph


def _describe(graph) -> str:
    return "\n".join(f"  {name} -> {', '.join(deps) or '(nothing)'}"
                     for name, deps in sorted(graph.items()))


def _cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}
    stack = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in graph.get(node, []):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_is_acyclic():
    graph = _graph()
    cycle = _cycle(graph)
    assert cycle is None, (f"import cycle: {' -> '.join(cycle)}\n"
                           f"mlpcore's import graph (module -> imports):\n{_describe(graph)}")


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert _cycle({"a": ["b", "c"], "b": ["c"], "c": []}) is None


def test_the_graph_sees_the_known_edges():
    graph = _graph()
    assert "training" in graph["model"] and "callbacks" in graph["training"]
    assert "model" in graph["io"] and "saving" in graph["model"]
    assert "model" not in graph["saving"] and "io" not in graph["callbacks"]


def test_only_the_model_and_layers_touch_the_native_handle():
    offenders = []
    for name, path in MODULES.items():
        if name in NET_OWNERS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "_net":
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, f"._net used outside {sorted(NET_OWNERS)}: {offenders}"


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for name, path in MODULES.items():
        for module, _, names in _imports(name, path):
            offenders += [f"{name} imports {module}.{n}" for n in names
                          if n.startswith("_") and not n.startswith("__")]
    assert not offenders, "\n".join(offenders)


def test_library_modules_import_mlpcore_at_the_top():
    offenders = []
    for name, path in MODULES.items():
        if name.startswith(LAZY_ALLOWED_FROM):
            continue
        for module, local, _ in _imports(name, path):
            if local and (name, module) not in LAZY_ALLOWED:
                offenders.append(f"{name} imports {module} inside a function")
    assert not offenders, "\n".join(offenders)
