"""The package's modules import each other without cycles, and model loading (`models`) knows
nothing of pipelines. Counted: what a module imports when it is imported; imports inside
functions (a registered function's implementation, loaded on first use) are not."""
import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set

PACKAGE = Path(__file__).resolve().parents[1] / "spacy_gner"


def module_level(statements: List[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements run when a module is imported (in `if` and `try` blocks too, but not
    under `if TYPE_CHECKING`), not those inside functions."""
    for node in statements:
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.dump(node.test):
            yield from module_level(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from module_level(node.body + node.orelse + node.finalbody
                                    + [s for h in node.handlers for s in h.body])
        elif isinstance(node, ast.ClassDef):
            yield from module_level(node.body)


def imports(path: Path) -> Set[str]:
    """The package modules a module imports when it is imported."""
    found = set()
    for node in module_level(ast.parse(path.read_text(encoding="utf8")).body):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("spacy_gner."):
            found.add(node.module.split(".")[1])
    return found & {p.stem for p in PACKAGE.glob("*.py")}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Every cycle found by a depth-first walk, as the modules along it."""
    found, state = [], {}
    path: List[str] = []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for other in sorted(graph[module]):
            if state.get(other) == "open":
                found.append(path[path.index(other):] + [other])
            elif other not in state:
                visit(other)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_no_module_imports_itself_through_others():
    graph = {path.stem: imports(path) - {path.stem} for path in PACKAGE.glob("*.py")}
    assert graph["models"] <= {"compat"}, graph["models"]
    assert cycles(graph) == []


def test_the_cycle_check_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
