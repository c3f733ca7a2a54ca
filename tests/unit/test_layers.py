"""The layers, checked on the source: what each folder may import, and no import cycles.

Every ``import`` statement of the package counts, wherever it sits (a
function-level import is still a dependency), read with ``ast`` without
importing anything.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = "mtasts_resolver"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


MODULES = _modules()


def _resolve(name: str) -> str:
    """The package module an imported name lives in (``a.b.C`` → ``a.b``), or "" outside the package."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports_of(module: str) -> set[str]:
    """The package modules ``module`` imports (absolute and relative imports, any nesting level)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] or [base]
        else:
            continue
        for name in names:
            if target := _resolve(name):
                found.add(target)
    found.discard(module)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_walk_sees_the_package():
    """Guards the checks below: an empty graph would pass them all."""
    assert "mtasts_resolver.protocols.socketmap" in GRAPH
    assert "mtasts_resolver.lookup" in GRAPH["mtasts_resolver.protocols.socketmap"]
    assert "mtasts_resolver.net.sockets" in GRAPH["mtasts_resolver.app.workers"]
    assert "mtasts_resolver.protocols._ordered" in GRAPH["mtasts_resolver.protocols"]   # relative import


@pytest.mark.parametrize("module", [m for m in MODULES if _in(m, f"{PACKAGE}.protocols")])
def test_protocols_import_only_the_lookup_interface(module):
    allowed = {f"{PACKAGE}.lookup"}
    wrong = {target for target in GRAPH[module] if target not in allowed and not _in(target, f"{PACKAGE}.protocols")}
    assert not wrong, f"{module} imports {sorted(wrong)}"


TLSRPT_MUST_NOT_IMPORT = (f"{PACKAGE}.service", f"{PACKAGE}.app", f"{PACKAGE}.net.sts_fetch", f"{PACKAGE}.cli")


@pytest.mark.parametrize("module", [m for m in MODULES if _in(m, f"{PACKAGE}.tlsrpt")])
def test_tlsrpt_does_not_reach_up_or_into_the_policy_fetch(module):
    """Arrows point down: app wires tlsrpt, tlsrpt never imports the service, the app shell or the fetch."""
    wrong = {target for target in GRAPH[module] if any(_in(target, banned) for banned in TLSRPT_MUST_NOT_IMPORT)}
    assert not wrong, f"{module} imports {sorted(wrong)}"


@pytest.mark.parametrize("module", [m for m in MODULES if _in(m, f"{PACKAGE}.policy")])
def test_policy_rules_do_no_io(module):
    """policy/ is pure: its own package, the config and lookup value types; no network, store or shell."""
    allowed = (f"{PACKAGE}.config", f"{PACKAGE}.lookup", PACKAGE)
    wrong = {target for target in GRAPH[module] if not (_in(target, f"{PACKAGE}.policy") or target in allowed)}
    assert not wrong, f"{module} imports {sorted(wrong)}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b"], ["c", "d"]]),
])
def test_cycle_finder(graph, expected):
    assert sorted(_cycles(graph)) == expected


def test_no_import_cycles():
    """No two modules need each other.

    A module's edge to its own parent package is left out: importing
    ``store.sqlite`` loads ``store`` first anyway, so ``store/__init__.py``
    opening its backend module (``open_store``) while that module takes
    ``StoreError`` from the package is the ordinary package shape, not a cycle.
    """
    graph = {module: {target for target in targets if not (_in(module, target) and MODULES[target].name == "__init__.py")}
             for module, targets in GRAPH.items()}
    assert _cycles(graph) == []
