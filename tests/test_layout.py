"""The package layout follows the data flow: no import cycles, nothing imports a command."""

import ast
import json
from pathlib import Path

import vlmaudit

PACKAGE = Path(vlmaudit.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every vlmaudit module this file imports, at module level or inside functions."""
    return imports_in(path.read_text(), known)


def imports_in(source: str, known: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vlmaudit"):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("vlmaudit"))
    return {name for name in found if name in known}


def import_graph() -> dict[str, set[str]]:
    """Module -> the vlmaudit modules it names in an import, a parent package included: a module
    that imports from its own package's __init__, which imports it back (even lazily, inside a
    function), is a cycle."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [])):
            return cycle
    return None


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None


def test_a_lazy_import_of_the_parent_package_is_an_edge():
    """Planted: the backends/__init__ <-> backends/cascade cycle (a function-level import of the
    package from the module the package imports)."""
    graph = import_graph()
    assert "vlmaudit.backends" not in graph["vlmaudit.backends.cascade"]
    graph["vlmaudit.backends.cascade"] |= imports_in("def f():\n    from vlmaudit.backends import build_judge\n",
                                                     set(graph))
    assert find_cycle(graph)[-3:] == ["vlmaudit.backends", "vlmaudit.backends.cascade", "vlmaudit.backends"]


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def stage(module: str) -> str:
    return ".".join(module.split(".")[:2])


def stage_graph(graph) -> dict[str, set[str]]:
    stages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        stages.setdefault(stage(module), set())
        for target in targets:
            if stage(target) != stage(module):
                stages[stage(module)].add(stage(target))
                stages.setdefault(stage(target), set())
    return stages


def test_stages_import_only_downwards():
    """The stages (vlmaudit.X) form no cycle: every import between stages runs down the floors."""
    graph = import_graph()
    assert find_cycle(stage_graph(graph)) is None
    planted = {**graph, "vlmaudit.storage.location": graph["vlmaudit.storage.location"] | {"vlmaudit.report.engine"}}
    assert find_cycle(stage_graph(planted)) is not None  # storage is below report


def test_nothing_outside_the_commands_imports_a_command():
    for name, targets in import_graph().items():
        if name.startswith(("vlmaudit.commands", "vlmaudit.cli", "vlmaudit.__main__")):
            continue
        assert not {t for t in targets if t.startswith(("vlmaudit.commands", "vlmaudit.cli"))}, name


def test_stages_are_subpackages():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "__main__", "cli", "errors", "flags", "progress", "schema"]
    for stage in ("scan", "rulebook", "report", "filter", "head", "backends", "demo", "commands", "engine", "storage",
                  "evaluate", "calibrate"):
        assert (PACKAGE / stage / "__init__.py").is_file()


def test_one_spelling_of_is_this_a_url():
    """`storage.location.is_url` decides what is a URL; no module guesses with '://' in text."""
    guessing = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                if p.name != "location.py" and any(
                    isinstance(n, ast.Compare) and isinstance(n.left, ast.Constant) and n.left.value == "://"
                    for n in ast.walk(ast.parse(p.read_text())))]
    assert guessing == []


def test_status_words_are_the_enums_of_the_schema():
    """Rows and stats files carry today's strings: the enums only name them once."""
    from vlmaudit.schema import DONE, RECORDED, STATUSES, SampleStatus, ShardStatus

    assert [s.value for s in SampleStatus] == ["ok", "missing_image", "decode_error", "too_large", "bad_name",
                                               "duplicate_key", "inference_error"]
    assert set(STATUSES) == set(SampleStatus) and list(DONE) == ["complete", "truncated"]
    assert list(RECORDED) == ["complete", "truncated", "failed"] and ShardStatus.SKIPPED not in RECORDED
    assert f"{SampleStatus.OK}" == str(SampleStatus.OK) == "ok" and json.dumps(ShardStatus.FAILED) == '"failed"'


def test_the_scanner_calls_the_scorer_protocol_and_never_probes_a_backend():
    for name in ("scanner.py", "escalation.py", "gpu_decode.py"):
        tree = ast.parse((PACKAGE / "scan" / name).read_text())
        probes = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                  and n.func.id in ("getattr", "hasattr") and "backend" in ast.unparse(n.args[0])]
        assert probes == [], (name, probes)


# ---- the tests' own layout: tests/X/ holds the tests of vlmaudit/X/, helpers live in conftest ----

TESTS = Path(__file__).resolve().parent
HELPERS = {"conftest", "cdp", "s3_server"}  # the modules test modules may import


def modules_of_tests() -> list[Path]:
    return sorted(TESTS.rglob("test_*.py"))


def test_folders_name_the_package_they_test():
    folders = {p.parent.name for p in modules_of_tests() if p.parent != TESTS}
    assert folders <= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}, folders


def test_no_test_module_imports_another():
    local = {p.stem for p in TESTS.rglob("*.py")} - HELPERS
    for path in modules_of_tests():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not {n.split(".")[0] for n in names} & (local | {"tests"}), (str(path.relative_to(TESTS)), names)


def bodies_of_tests(source: str) -> dict[str, list[str]]:
    """Normalised body (ast.dump, docstring left out) -> the test functions in SOURCE that have it."""
    bodies: dict[str, list[str]] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            body = node.body[1:] if ast.get_docstring(node) is not None else node.body
            bodies.setdefault("\n".join(ast.dump(statement) for statement in body), []).append(node.name)
    return bodies


def duplicate_tests(sources: dict[str, str]) -> list[list[str]]:
    found: dict[str, list[str]] = {}
    for name, source in sources.items():
        for body, tests in bodies_of_tests(source).items():
            found.setdefault(body, []).extend(f"{name}::{test}" for test in tests)
    return [places for places in found.values() if len(places) > 1]


def test_no_two_tests_share_a_body():
    sources = {str(p.relative_to(TESTS)): p.read_text() for p in TESTS.rglob("*.py")}
    assert duplicate_tests(sources) == []
    planted = '''def test_b(x):\n    """Another name, another docstring."""\n    assert x == 1\n'''
    assert duplicate_tests({"a.py": "def test_a(x):\n    assert x == 1\n", "b.py": planted}) == [["a.py::test_a", "b.py::test_b"]]


def test_a_change_to_the_shared_demo_scan_is_named_and_undone(tmp_path):
    from conftest import ReadOnlyTree

    root = tmp_path / "demo"
    (root / "reports").mkdir(parents=True)
    (root / "reports" / "a.parquet").write_bytes(b"rows")
    (root / "reports" / "b.json").write_text("{}")
    tree = ReadOnlyTree(root, tmp_path / "pristine")
    assert tree.changes() == []
    (root / "reports" / "a.parquet").write_bytes(b"ROWS")
    (root / "reports" / "b.json").unlink()
    (root / "reports" / "new").mkdir()
    (root / "reports").chmod(0o700)
    assert tree.changes() == ["reports", "reports/a.parquet", "reports/b.json", "reports/new"]
    tree.restore()
    assert tree.changes() == [] and (root / "reports" / "a.parquet").read_bytes() == b"rows"
