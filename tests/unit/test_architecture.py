"""The package's import rules, read from the source with :mod:`ast` (nothing here imports the package).

fleet-ray installs four folders as one package: ``fleet_ray/`` (the core), ``actors/`` (as
``fleet_ray.actors``), ``browser/`` (``fleet_ray.browser``) and ``serve/`` (``fleet_ray.serve``). The rules:

- no import cycles: none among module-level imports, and none closed by a function-level import
  (a function-level import is for a lazy dependency, never to hide a cycle);
- ``fleet_ray.control`` is pure: no Ray, Redis, HTTP, sockets, processes, environment or filesystem,
  directly or through what it imports;
- every ``@ray.remote`` lives in ``fleet_ray.actors``;
- the core imports neither ``fleet_ray.actors``, ``fleet_ray.browser`` nor ``fleet_ray.serve`` at module
  level, nor Ray outside ``fleet_ray.client`` and ``fleet_ray.store`` (inside a function, for a lazy
  import, it may);
- a top-level class name means one thing: no two modules define it; a module's file name likewise,
  but for the few listed in :data:`SHARED_FILE_NAMES` with what each copy holds.

Imports under ``if TYPE_CHECKING:`` never count. Each failure names the file and line. The same checks
run against small broken trees in :func:`test_the_checks_catch_each_kind_of_breakage`, so they stay real.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

ROOMS = {"fleet_ray": "fleet_ray", "actors": "fleet_ray.actors", "browser": "fleet_ray.browser", "serve": "fleet_ray.serve"}
OUTER = ("fleet_ray.actors", "fleet_ray.browser", "fleet_ray.serve")  # the rooms the core doesn't import
RAY_AT_MODULE_LEVEL = ("fleet_ray.client", "fleet_ray.store")  # the core's modules that may import Ray at the top

CONTROL = "fleet_ray.control"
# what fleet_ray.control may not import, at any level: I/O, processes, environment and filesystem
CONTROL_FORBIDDEN = (
    "ray", "redis", "httpx", "requests", "aiohttp", "urllib3", "urllib.request", "http", "socket", "ssl",
    "sqlite3", "os", "pathlib", "shutil", "glob", "tempfile", "io", "fcntl", "signal", "subprocess",
    "multiprocessing", "psutil", "importlib", "playwright", "browserforge", "fastapi", "starlette", "uvicorn",
    "pydantic_settings", "dotenv",
    "fleet_ray.store", "fleet_ray.client", "fleet_ray.cli", "fleet_ray.settings", "fleet_ray.ray_boundary",
    "fleet_ray.observe.notify", "fleet_ray.streams.sinks", *OUTER,
)
CONTROL_FORBIDDEN_CALLS = ("open", "input", "exec", "eval", "compile", "__import__", "breakpoint")
# ... nor reach, through the package's modules it imports, one that imports these at module level
CONTROL_FORBIDDEN_TRANSITIVELY = (
    "ray", "redis", "httpx", "requests", "aiohttp", "socket", "sqlite3", "subprocess", "psutil", "playwright",
    "browserforge", "fastapi", "starlette", "uvicorn",
)

# File names that more than one room uses, each for its own side of one concept. Not __init__.py.
SHARED_FILE_NAMES = {
    "automation.py": "fleet_ray/automation.py: the automation base classes and context; "
                     "browser/automation.py: BrowserAutomation, their browser flavour",
    "campaign.py": "fleet_ray/campaign/campaign.py: a campaign; fleet_ray/cli/campaign.py: its CLI commands; "
                   "browser/campaign.py: the browser its members drive",
    "demo.py": "fleet_ray/builtins/demo.py: the demo's automations and site; fleet_ray/cli/demo.py: `fleet-ray demo`",
    "events.py": "fleet_ray/observe/events.py: the event model and log; serve/events.py: their HTTP routes",
    "models.py": "fleet_ray/spec/models.py: the spec's models; fleet_ray/api/models.py: the API's reply models",
    "proxies.py": "browser/proxies.py: browser slots' proxy pool; "
                  "fleet_ray/campaign/proxies.py: campaign members' proxy health and reputation hits",
    "supervisor.py": "actors/supervisor.py: the supervisor actor; fleet_ray/api/supervisor.py: its replies' models",
    "testing.py": "fleet_ray/testing.py: fakes for users' tests; serve/testing.py: helpers for testing the API",
}


# -- reading the package ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    target: str  # absolute dotted name: a module, or a module's attribute (``from m import name``)
    line: int
    lazy: bool  # inside a function
    typing_only: bool  # under ``if TYPE_CHECKING:``


@dataclass
class Module:
    name: str
    path: Path
    rel: str  # the path as the repository shows it
    tree: ast.Module
    imports: list[Import] = field(default_factory=list)

    def at(self, line: int) -> str:
        return f"{self.rel}:{line}"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: Module, package: bool) -> Iterator[Import]:
    """Every import statement of ``module``, its targets made absolute."""

    def absolute(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        parts = module.name.split(".")
        base = parts if package else parts[:-1]
        base = base[: len(base) - (node.level - 1)]
        return ".".join([*base, node.module] if node.module else base)

    def visit(node: ast.AST, lazy: bool, typing_only: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from visit(child, True, typing_only)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), lazy, True)
                for stmt in child.orelse:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), lazy, typing_only)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(alias.name, child.lineno, lazy, typing_only)
            elif isinstance(child, ast.ImportFrom):
                base = absolute(child)
                for alias in child.names:
                    yield Import(f"{base}.{alias.name}" if alias.name != "*" else base, child.lineno, lazy, typing_only)
            else:
                yield from visit(child, lazy, typing_only)

    yield from visit(module.tree, False, False)


def load_package(root: Path) -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for folder, package in ROOMS.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join([package, *(parts[:-1] if is_package else parts)])
            module = Module(name, path, path.relative_to(root).as_posix(), ast.parse(path.read_text(), str(path)))
            module.imports = list(_imports(module, is_package))
            modules[name] = module
    return modules


def _in(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _owner(target: str, modules: dict[str, Module]) -> str | None:
    """The package module an import target is (or is an attribute of); None outside the package."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


Edges = dict[str, dict[str, Import]]  # importer -> imported module -> (first) import of it


def _graph(modules: dict[str, Module], with_lazy: bool) -> Edges:
    """Who imports whom inside the package. A parent package's ``__init__`` that Python runs first is not
    an edge: only the module an import statement names is."""
    edges: Edges = defaultdict(dict)
    for m in modules.values():
        for imp in m.imports:
            if imp.typing_only or (imp.lazy and not with_lazy):
                continue
            target = _owner(imp.target, modules)
            if target is not None and target != m.name:
                known = edges[m.name].get(target)
                if known is None or (known.lazy and not imp.lazy):  # a module-level import of it wins
                    edges[m.name][target] = imp
    return edges


def _cycles(edges: Edges, nodes: Iterable[str]) -> list[list[str]]:
    """One cycle per strongly connected component that has one (Tarjan, then a path around it)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(nodes):
        if v not in index:
            connect(v)
    cycles = []
    for component in components:
        start = min(component)
        paths = {start: [start]}
        todo = [start]
        while todo:  # breadth first, inside the component, back to start
            v = todo.pop(0)
            for w in sorted(edges.get(v, {})):
                if w == start:
                    cycles.append([*paths[v], start])
                    todo = []
                    break
                if w in component and w not in paths:
                    paths[w] = [*paths[v], w]
                    todo.append(w)
    return sorted(cycles)


def _describe(cycle: list[str], edges: Edges, modules: dict[str, Module]) -> str:
    steps = [cycle[0]]
    for a, b in zip(cycle, cycle[1:], strict=False):
        imp = edges[a][b]
        steps.append(f"--({modules[a].at(imp.line)}{', in a function' if imp.lazy else ''})--> {b}")
    return " ".join(steps)


# -- the checks: each returns its problems, one line each ------------------------------------------------


def cycle_problems(modules: dict[str, Module]) -> list[str]:
    edges = _graph(modules, with_lazy=False)
    return [f"import cycle: {_describe(c, edges, modules)}" for c in _cycles(edges, modules)]


def hidden_cycle_problems(modules: dict[str, Module]) -> list[str]:
    """Cycles that a function-level import closes (those without one are cycle_problems')."""
    edges = _graph(modules, with_lazy=True)
    return [f"import cycle hidden behind a function-level import: {_describe(c, edges, modules)}"
            for c in _cycles(edges, modules) if any(edges[a][b].lazy for a, b in zip(c, c[1:], strict=False))]


def control_purity_problems(modules: dict[str, Module]) -> list[str]:
    problems = []
    control = {n: m for n, m in modules.items() if _in(n, [CONTROL])}
    for m in control.values():
        for imp in m.imports:
            if not imp.typing_only and _in(imp.target, CONTROL_FORBIDDEN):
                problems.append(f"{m.at(imp.line)}: fleet_ray.control must stay pure, but imports {imp.target}")
        for node in ast.walk(m.tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in CONTROL_FORBIDDEN_CALLS:
                problems.append(f"{m.at(node.lineno)}: fleet_ray.control must stay pure, but calls {node.func.id}()")
    # what control's module-level imports bring in, through the package's own modules
    edges = _graph(modules, with_lazy=False)
    via: dict[str, list[str]] = {n: [n] for n in control}
    todo = sorted(control)
    while todo:
        v = todo.pop(0)
        for w in sorted(edges.get(v, {})):
            if w not in via:
                via[w] = [*via[v], w]
                todo.append(w)
    for name, chain in sorted(via.items()):
        if name in control:
            continue
        m = modules[name]
        for imp in m.imports:
            if not (imp.lazy or imp.typing_only) and _in(imp.target, CONTROL_FORBIDDEN_TRANSITIVELY):
                first = modules[chain[0]]
                problems.append(f"{first.at(edges[chain[0]][chain[1]].line)}: fleet_ray.control must stay pure, but "
                                f"{' -> '.join(chain)} imports {imp.target} ({m.at(imp.line)})")
    return problems


def ray_remote_problems(modules: dict[str, Module]) -> list[str]:
    problems = []
    for m in modules.values():
        if _in(m.name, ["fleet_ray.actors"]):
            continue
        ray_names, remote_names = set(), set()
        for node in ast.walk(m.tree):
            if isinstance(node, ast.Import):  # `import ray`, `import ray as r`, `import ray.util` (binds ray)
                for a in node.names:
                    if a.name == "ray" or (a.asname is None and a.name.startswith("ray.")):
                        ray_names.add(a.asname or "ray")
            elif isinstance(node, ast.ImportFrom) and node.module == "ray" and not node.level:
                for a in node.names:
                    if a.name == "remote":
                        remote_names.add(a.asname or a.name)
                        problems.append(f"{m.at(node.lineno)}: imports ray.remote outside fleet_ray.actors")
        for node in ast.walk(m.tree):
            if (isinstance(node, ast.Attribute) and node.attr == "remote"
                    and isinstance(node.value, ast.Name) and node.value.id in ray_names):
                problems.append(f"{m.at(node.lineno)}: ray.remote outside fleet_ray.actors (every Ray actor and task "
                                "lives in actors/)")
            elif isinstance(node, ast.Name) and node.id in remote_names and isinstance(node.ctx, ast.Load):
                problems.append(f"{m.at(node.lineno)}: ray.remote outside fleet_ray.actors")
    return problems


def core_import_problems(modules: dict[str, Module]) -> list[str]:
    problems = []
    for m in modules.values():
        if _in(m.name, OUTER):
            continue
        for imp in m.imports:
            if imp.lazy or imp.typing_only:
                continue
            if _in(imp.target, OUTER):
                problems.append(f"{m.at(imp.line)}: the core imports {imp.target} at module level "
                                "(fleet_ray/ doesn't depend on actors, browser or serve; import it lazily or invert)")
            elif _in(imp.target, ["ray"]) and not _in(m.name, RAY_AT_MODULE_LEVEL):
                problems.append(f"{m.at(imp.line)}: {m.name} imports {imp.target} at module level "
                                "(only fleet_ray.client and fleet_ray.store may; elsewhere import Ray in the function)")
    return problems


def class_name_problems(modules: dict[str, Module]) -> list[str]:
    where: dict[str, list[str]] = defaultdict(list)
    for m in modules.values():
        for node in m.tree.body:
            if isinstance(node, ast.ClassDef):
                where[node.name].append(m.at(node.lineno))
    return [f"class {name} is defined in {len(places)} modules: {', '.join(sorted(places))}"
            for name, places in sorted(where.items()) if len(places) > 1]


def file_name_problems(modules: dict[str, Module], shared: dict[str, str]) -> list[str]:
    where: dict[str, list[str]] = defaultdict(list)
    for m in modules.values():
        if m.path.name != "__init__.py":
            where[m.path.name].append(m.rel)
    problems = [f"module file name {name} is used {len(paths)} times: {', '.join(sorted(paths))} (rename one, or add it "
                "to SHARED_FILE_NAMES saying what each holds)"
                for name, paths in sorted(where.items()) if len(paths) > 1 and name not in shared]
    problems += [f"SHARED_FILE_NAMES lists {name}, which is no longer shared: drop it"
                 for name in sorted(shared) if len(where.get(name, [])) < 2]
    return problems


# -- the tests -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def package() -> dict[str, Module]:
    return load_package(ROOT)


def _report(problems: list[str]) -> str:
    return "\n".join(["", *problems])


def test_the_package_is_read_whole(package):
    assert {"fleet_ray", "fleet_ray.control", "fleet_ray.actors.slot", "fleet_ray.browser", "fleet_ray.serve"} <= set(package)


def test_no_import_cycles(package):
    assert not (problems := cycle_problems(package)), _report(problems)


def test_no_cycle_hides_behind_a_function_level_import(package):
    assert not (problems := hidden_cycle_problems(package)), _report(problems)


def test_control_is_pure(package):
    assert not (problems := control_purity_problems(package)), _report(problems)


def test_ray_remote_lives_in_actors(package):
    assert not (problems := ray_remote_problems(package)), _report(problems)


def test_the_core_imports_no_outer_room_and_no_ray_at_module_level(package):
    assert not (problems := core_import_problems(package)), _report(problems)


def test_each_class_name_has_one_home(package):
    assert not (problems := class_name_problems(package)), _report(problems)


def test_module_file_names_repeat_only_where_listed(package):
    assert not (problems := file_name_problems(package, SHARED_FILE_NAMES)), _report(problems)


# -- the checks themselves, on small broken trees ---------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> dict[str, Module]:
    base = {"fleet_ray/__init__.py": "", "fleet_ray/control/__init__.py": "", "actors/__init__.py": "",
            "browser/__init__.py": "", "serve/__init__.py": ""}
    for rel, text in {**base, **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return load_package(root)


def test_the_checks_catch_each_kind_of_breakage(tmp_path):
    clean = _tree(tmp_path / "clean", {
        "fleet_ray/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fleet_ray.b import B\n",
        "fleet_ray/b.py": "import fleet_ray.a\n\ndef lazy():\n    import ray\n    from fleet_ray.actors import x\n",
        "fleet_ray/control/pure.py": "import math\nfrom dataclasses import dataclass\nfrom fleet_ray.a import *\n",
        "fleet_ray/client/__init__.py": "import ray\n",
        "actors/x.py": "import ray\n\n@ray.remote\nclass X:\n    pass\n",
    })
    checks = [cycle_problems, hidden_cycle_problems, control_purity_problems, ray_remote_problems,
              core_import_problems, class_name_problems]
    assert [c(clean) for c in checks] == [[]] * len(checks)
    assert file_name_problems(clean, {}) == []

    cycle = _tree(tmp_path / "cycle", {"fleet_ray/a.py": "import fleet_ray.b\n", "fleet_ray/b.py": "from . import a\n"})
    assert cycle_problems(cycle) == ["import cycle: fleet_ray.a --(fleet_ray/a.py:1)--> fleet_ray.b "
                                     "--(fleet_ray/b.py:1)--> fleet_ray.a"]

    hidden = _tree(tmp_path / "hidden", {"fleet_ray/a.py": "import fleet_ray.b\n",
                                         "fleet_ray/b.py": "\n\ndef f():\n    from fleet_ray.a import A\n"})
    assert cycle_problems(hidden) == []
    assert hidden_cycle_problems(hidden) == [
        "import cycle hidden behind a function-level import: fleet_ray.a --(fleet_ray/a.py:1)--> fleet_ray.b "
        "--(fleet_ray/b.py:4, in a function)--> fleet_ray.a"]

    impure = _tree(tmp_path / "impure", {
        "fleet_ray/control/r.py": "from pathlib import Path\n\ndef f():\n    import redis\n    return open('x')\n",
        "fleet_ray/control/t.py": "from fleet_ray.helper import h\n",
        "fleet_ray/helper.py": "import httpx\n",
    })
    assert control_purity_problems(impure) == [
        "fleet_ray/control/r.py:1: fleet_ray.control must stay pure, but imports pathlib.Path",
        "fleet_ray/control/r.py:4: fleet_ray.control must stay pure, but imports redis",
        "fleet_ray/control/r.py:5: fleet_ray.control must stay pure, but calls open()",
        "fleet_ray/control/t.py:1: fleet_ray.control must stay pure, but fleet_ray.control.t -> fleet_ray.helper "
        "imports httpx (fleet_ray/helper.py:1)",
    ]

    remote = _tree(tmp_path / "remote", {
        "fleet_ray/w.py": "import ray as r\n\n@r.remote(num_cpus=0)\ndef task():\n    pass\n",
        "browser/v.py": "from ray import remote\nA = remote(object)\n",
    })
    assert [p.split(": ")[0] for p in ray_remote_problems(remote)] == [
        "fleet_ray/w.py:3", "browser/v.py:1", "browser/v.py:2"]

    core = _tree(tmp_path / "core", {"fleet_ray/c.py": "import ray.util\nfrom fleet_ray.serve import app\n",
                                     "serve/app.py": "import ray\n"})
    assert [p.split(": ")[0] for p in core_import_problems(core)] == ["fleet_ray/c.py:1", "fleet_ray/c.py:2"]

    twice = _tree(tmp_path / "twice", {"fleet_ray/spec.py": "class Run:\n    pass\n",
                                       "browser/spec.py": "\n\nclass Run:\n    pass\n"})
    assert class_name_problems(twice) == ["class Run is defined in 2 modules: browser/spec.py:3, fleet_ray/spec.py:1"]
    assert file_name_problems(twice, {}) == [
        "module file name spec.py is used 2 times: browser/spec.py, fleet_ray/spec.py (rename one, or add it to "
        "SHARED_FILE_NAMES saying what each holds)"]
    assert file_name_problems(twice, {"spec.py": "why", "gone.py": "why"}) == [
        "SHARED_FILE_NAMES lists gone.py, which is no longer shared: drop it"]
