"""The package's layers import one way (docs/ARCHITECTURE.md): each module imports only from its
own layer or the layers below it, and a backend's folder imports no other backend's."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jitgrad"
# bottom to top; a module's layer is its first folder under jitgrad/ (or its own name at the top)
LAYERS = [("errors", "version"), ("runtime",), ("ir",), ("transforms",), ("schedule",), ("codegen",),
          ("frontend",),
          ("__init__", "nn", "numpy", "dask", "scipy", "debug", "optim", "random", "lax", "flatten_util")]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
BACKENDS = ("numba_cpu", "numba_cuda")


def _module_parts(path):
    return list(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def _imports(path):
    """Every jitgrad module ``path`` imports (at module level or inside functions), as parts."""
    package = _module_parts(path)[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = base + (node.module.split(".") if node.module else [])
            if target[:1] == ["jitgrad"]:
                for alias in node.names:  # `from . import ops` names a module
                    yield target + [alias.name] if (PACKAGE.parent.joinpath(*target, alias.name + ".py")).exists() \
                        else target
        elif isinstance(node, ast.Import):
            yield from (alias.name.split(".") for alias in node.names if alias.name.startswith("jitgrad"))


def _layer(parts):
    return parts[1]


def test_every_module_has_a_layer():
    for path in PACKAGE.rglob("*.py"):
        assert _layer(_module_parts(path)) in RANK, path


def test_layers_import_downward_only():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        me = _module_parts(path)
        for target in _imports(path):
            if len(target) > 1 and RANK[_layer(target)] > RANK[_layer(me)]:
                upward.append(f"{'.'.join(me)} imports {'.'.join(target)}")
    assert upward == []


def test_backends_do_not_import_each_other():
    crossing = []
    for backend in BACKENDS:
        for path in (PACKAGE / "codegen" / backend).rglob("*.py"):
            for target in _imports(path):
                others = set(BACKENDS) - {backend}
                if others & set(target):
                    crossing.append(f"{'.'.join(_module_parts(path))} imports {'.'.join(target)}")
    assert crossing == []
