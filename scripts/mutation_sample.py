"""Mutation score of one package on a random sample of its mutants, locally (not in CI).

scripts/mutation.sh runs mutmut's own runner, which runs every mutant inside one long-lived process:
state leaks between its in-process pytest runs here (a moto server's s3fs cache, fork after torch
started its threads), and report/ (9,442 mutants) or scan/ (5,387) would take days on 2 cores. This
script uses mutmut only to MAKE the mutants (same operators, same names as `mutmut results`), then
for each sampled mutant:

  1. writes the mutated module into a private copy of the checkout (one copy per worker),
  2. runs, in a fresh `python -m pytest -x` process (PYTHONPATH = the copy, so `vlmaudit` children
     run the mutant too), the tests whose coverage context touched the mutated function, fastest
     first (one coverage run of all of tests/ with per-test contexts maps functions to tests, kept
     in a map that `--remap` updates for new test files; a function no test touched in process
     runs tests/PACKAGE whole),
  3. restores the file: exit 0 = survived, a test failure or error = killed, past the limit = timeout,
     killed by a signal = crashed (no verdict: not counted; `--names F --rerun` runs them again).

  python scripts/mutation_sample.py scan --sample 150 --seed 7 --out /tmp/m/scan     # draw and run
  python scripts/mutation_sample.py scan --names FILE --out /tmp/m/scan              # these mutants
  python scripts/mutation_sample.py scan --out /tmp/m/scan --summary                 # score, survivors
  python scripts/mutation_sample.py scan --out /tmp/m/scan --remap tests/scan/test_new.py   # map new tests
Needs `pip install mutmut pytest-cov` (local tools, not test dependencies).
Results go to OUT/results.jsonl (a re-run skips mutants already there); survivors with their
diffs to OUT/survivors.txt. The score's 95 % interval is Wilson's.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTRA_TESTS = {"scan": ["tests/backends/test_cascade.py"]}  # tests outside tests/PKG that exercise PKG


# ---- making the mutants (mutmut's operators and names) ------------------------------------------
def file_mutants(path: Path, module: str) -> dict[str, tuple]:
    """{mutant name: (function key, parsed module, mutation)} for one source file."""
    import libcst as cst
    from mutmut.mutation.file_mutation import create_mutations, group_by_top_level_node
    from mutmut.mutation.trampoline_templates import mangle_function_name

    code = path.read_text()
    tree, mutations, _, _ = create_mutations(str(path), code)
    by_function = group_by_top_level_node(mutations)
    out = {}
    for cls, function in _functions(tree, cst):
        for i, mutation in enumerate(by_function.get(function, ()), 1):
            mangled = mangle_function_name(name=function.name.value, class_name=cls)
            key = f"{cls}.{function.name.value}" if cls else function.name.value
            out[f"{module}.{mangled}__mutmut_{i}"] = (key, tree, mutation)
    return out


def _functions(tree, cst):
    for statement in tree.body:
        if isinstance(statement, cst.FunctionDef):
            yield None, statement
        elif isinstance(statement, cst.ClassDef) and isinstance(statement.body, cst.IndentedBlock):
            for method in statement.body.body:
                if isinstance(method, cst.FunctionDef):
                    yield statement.name.value, method


def all_mutants(package: str) -> dict[str, tuple[Path, str, object, object]]:
    out = {}
    for path in sorted((ROOT / "vlmaudit" / package).rglob("*.py")):
        relative = path.relative_to(ROOT)
        module = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
        for name, (key, tree, mutation) in file_mutants(path, module).items():
            out[name] = (relative, key, tree, mutation)
    return out


def mutated_source(entry) -> str:
    _, _, tree, mutation = entry
    return tree.deep_replace(mutation.original_node, mutation.mutated_node).code


@lru_cache(maxsize=None)
def function_lines(path: Path, key: str) -> range:
    """The body lines of function KEY ("f" or "Class.f") in PATH (the checkout's, never mutated)."""
    tree = ast.parse(path.read_text())
    cls, _, name = key.rpartition(".")
    scope = tree.body
    if cls:
        scope = next(node.body for node in tree.body if isinstance(node, ast.ClassDef) and node.name == cls)
    for node in scope:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return range(node.body[0].lineno, node.end_lineno + 1)
    raise KeyError(key)


# ---- which tests touch which function ----------------------------------------------------------
def selection(package: str) -> list[str]:
    """The fallback for a function no test touched in process: the package's own tests."""
    return [f"tests/{package}"] + EXTRA_TESTS.get(package, [])


def child_tests() -> list[str]:
    """Tests that run `vlmaudit` in a child process or deliver Ctrl-C (listed in scripts/mutation.sh):
    left out of the map (under coverage one waited 300 s); what they reach in process other tests reach."""
    text = (ROOT / "scripts" / "mutation.sh").read_text()
    block = text[text.index("children=("):].split(")", 1)[0]
    return [line.strip() for line in block.splitlines()[1:] if line.strip().startswith("tests/")]


def test_map(path: Path, copy: Path, tests: list[str]) -> dict:
    """{"contexts": {file: {line: [test ids]}}, "durations": {test id: s}}: one coverage run of TESTS
    with per-test contexts, merged into the map at PATH (entries of the re-run test files replaced)."""
    old = json.loads(path.read_text()) if path.exists() else {"contexts": {}, "durations": {}}
    junit, data = path.with_suffix(".junit.xml"), copy / ".coverage"
    data.unlink(missing_ok=True)
    deselect = [arg for test in child_tests() for arg in ("--deselect", test)]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--cov=vlmaudit", "--cov-context=test",
               "--cov-report=", f"--junitxml={junit}", *deselect, *tests]
    subprocess.run(command, cwd=copy, env=_env(copy), check=False)
    new = {"contexts": _contexts(data, copy), "durations": _durations(junit)}
    merged = _merge(old, new, tests)
    path.write_text(json.dumps(merged))
    return merged


def _merge(old: dict, new: dict, rerun: list[str]) -> dict:
    """OLD's entries of tests outside the RERUN paths (test files or directories), plus NEW."""
    def kept(test_id: str) -> bool:
        file = test_id.split("::")[0]
        return not any(file == path or file.startswith(path.rstrip("/") + "/") for path in rerun)

    contexts = {}
    for name in set(old["contexts"]) | set(new["contexts"]):
        lines = {}
        for line in set(old["contexts"].get(name, {})) | set(new["contexts"].get(name, {})):
            ids = {t for t in old["contexts"].get(name, {}).get(line, []) if kept(t)}
            lines[line] = sorted(ids | set(new["contexts"].get(name, {}).get(line, [])))
        contexts[name] = lines
    durations = {t: s for t, s in old["durations"].items() if kept(t)} | new["durations"]
    return {"contexts": contexts, "durations": durations}


def _contexts(data_file: Path, copy: Path) -> dict:
    from coverage import CoverageData

    data = CoverageData(basename=str(data_file))
    data.read()
    out = {}
    for filename in data.measured_files():
        relative = str(Path(filename).resolve().relative_to(copy.resolve()))
        by_line = data.contexts_by_lineno(filename)
        out[relative] = {str(line): sorted({_test_id(c) for c in names if c}) for line, names in by_line.items()}
    return out


def _test_id(context: str) -> str:
    """pytest-cov's context "tests/x.py::test_f[param]|run" as "tests/x.py::test_f" (parameters dropped:
    their ids may not survive a round trip through the command line)."""
    return context.rsplit("|", 1)[0].split("[", 1)[0]


def _durations(junit: Path) -> dict[str, float]:
    import xml.etree.ElementTree as ET

    out: dict[str, float] = {}
    for case in ET.parse(junit).iter("testcase"):
        path = case.get("classname", "").replace(".", "/")
        test_id = f"{path}.py::{case.get('name', '').split('[', 1)[0]}"
        out[test_id] = out.get(test_id, 0.0) + float(case.get("time", 0) or 0)
    return out


def tests_for(entry, mapping: dict) -> list[str]:
    path, key, _, _ = entry
    by_line = mapping["contexts"].get(str(path), {})
    tests = {t for line in function_lines(ROOT / path, key) for t in by_line.get(str(line), [])}
    durations = mapping["durations"]
    return sorted(tests, key=lambda t: (durations.get(t, 1e9), t))


# ---- running one mutant -------------------------------------------------------------------------
def _env(copy: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MUTANT_UNDER_TEST")}
    env.update(PYTHONPATH=str(copy), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1")
    return env


def run_mutant(name: str, entry, tests: list[str], package: str, copy: Path, mapping: dict) -> dict:
    path = copy / entry[0]
    original = path.read_text()
    whole = not tests
    args = tests or selection(package)
    budget = sum(mapping["durations"].get(t, 5.0) for t in tests) if tests else 600.0
    limit = 3 * budget + 90
    start = time.monotonic()
    try:
        path.write_text(mutated_source(entry))
        command = ["nice", "-n", "10", sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                   "-p", "no:randomly", *args]
        done = subprocess.run(command, cwd=copy, env=_env(copy), capture_output=True, text=True, timeout=limit)
        # a signal (e.g. a segfault of a test process under load) is no verdict: re-run those by name
        status = "survived" if done.returncode == 0 else "crashed" if done.returncode < 0 else "killed"
        tail = done.stdout[-1500:] if status == "killed" else ""
        code = done.returncode
    except subprocess.TimeoutExpired:
        status, tail, code = "timeout", "", None
    finally:
        path.write_text(original)
    killer = next((line for line in tail.splitlines() if line.startswith(("FAILED", "ERROR"))), "")
    return {"name": name, "status": status, "exit": code, "seconds": round(time.monotonic() - start, 1),
            "tests": len(tests), "whole_selection": whole, "killer": killer[:300]}


def copy_tree(destination: Path) -> None:
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout
    packed = subprocess.run(["tar", "--null", "-T", "-", "-cf", "-"], cwd=ROOT, input=files, capture_output=True,
                            check=True).stdout
    subprocess.run(["tar", "-xf", "-"], cwd=destination, input=packed, check=True)


def run_sample(package: str, names: list[str], out: Path, workers: int, map_path: Path, rerun: bool = False) -> None:
    mutants = all_mutants(package)
    unknown = [n for n in names if n not in mutants]
    if unknown:
        print(f"note: {len(unknown)} names are not mutants of the current code (e.g. {unknown[0]}); skipped")
    results = out / "results.jsonl"
    done = {json.loads(line)["name"] for line in results.open()} if results.exists() else set()
    done -= set(names) if rerun else set()
    todo = [n for n in names if n in mutants and n not in done]
    copies = [out / f"copy{k}" for k in range(workers)]
    for copy in copies:
        copy_tree(copy)
    mapping = json.loads(map_path.read_text()) if map_path.exists() else test_map(map_path, copies[0], ["tests"])
    lock, queue = threading.Lock(), list(reversed(todo))

    def work(copy: Path) -> None:
        while True:
            with lock:
                if not queue:
                    return
                name = queue.pop()
            entry = mutants[name]
            result = run_mutant(name, entry, tests_for(entry, mapping), package, copy, mapping)
            with lock, results.open("a") as f:
                f.write(json.dumps(result) + "\n")
                print(f"{result['status']:8} {result['seconds']:6.1f}s {result['tests']:3} tests  {name}", flush=True)

    threads = [threading.Thread(target=work, args=(copy,)) for copy in copies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    summarize(package, out, names, mutants)


# ---- the score ------------------------------------------------------------------------------------
def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def summarize(package: str, out: Path, names: list[str] | None = None, mutants: dict | None = None) -> None:
    rows = [json.loads(line) for line in (out / "results.jsonl").open()]
    if names is not None:
        wanted = set(names)
        rows = [r for r in rows if r["name"] in wanted]
    latest = {r["name"]: r for r in rows}  # a mutant re-run by name: its last verdict
    rows = [r for r in latest.values() if r["status"] != "crashed"]
    killed = sum(r["status"] in ("killed", "timeout") for r in rows)
    low, high = wilson(killed, len(rows))
    print(f"{package}: {killed} of {len(rows)} killed ({killed / max(len(rows), 1):.1%}; 95 % interval "
          f"{low:.1%}-{high:.1%}); timeouts {sum(r['status'] == 'timeout' for r in rows)}; "
          f"crashed, not counted: {len(latest) - len(rows)}")
    mutants = mutants or all_mutants(package)
    with (out / "survivors.txt").open("w") as f:
        for r in rows:
            if r["status"] == "survived" and r["name"] in mutants:
                f.write(f"## {r['name']} ({r['tests']} tests{', whole selection' if r['whole_selection'] else ''})\n")
                f.write(diff(mutants[r["name"]]) + "\n")
    print(f"survivors with diffs: {out / 'survivors.txt'}")


def diff(entry) -> str:
    before = (ROOT / entry[0]).read_text().splitlines()
    after = mutated_source(entry).splitlines()
    lines = difflib.unified_diff(before, after, lineterm="", n=0)
    return "\n".join(line for line in lines if not line.startswith(("---", "+++", "@@")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sample", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exclude", type=Path, action="append", default=[], help="names not to draw")
    parser.add_argument("--names", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--summary", action="store_true")
    parser.add_argument("--rerun", action="store_true", help="run --names again even if they have results")
    parser.add_argument("--map", type=Path, help="the test map (default OUT/testmap.json; built from all of tests/ if absent)")
    parser.add_argument("--remap", nargs="+", metavar="TEST", help="re-run coverage of these test files into the map and stop")
    parser.add_argument("--list", action="store_true", help="print every mutant name and stop")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    map_path = args.map or args.out / "testmap.json"
    if args.remap:
        copy = args.out / "copy0"
        copy_tree(copy)
        test_map(map_path, copy, args.remap)
        return
    if args.list:
        print("\n".join(all_mutants(args.package)))
        return
    if args.summary:
        names = args.names.read_text().split() if args.names else None
        summarize(args.package, args.out, names)
        return
    if args.names:
        names = args.names.read_text().split()
    else:
        excluded = {n for path in args.exclude for n in path.read_text().split()}
        pool = sorted(n for n in all_mutants(args.package) if n not in excluded)
        random.Random(args.seed).shuffle(pool)
        names = pool[:args.sample]
        (args.out / "sample.txt").write_text("\n".join(names) + "\n")
    run_sample(args.package, names, args.out, args.workers, map_path, args.rerun)


if __name__ == "__main__":
    main()
