"""The layers of docs/architecture.md, checked on the source: who may import whom.

The import graph is read from the source with ``ast`` (nothing is imported):

* nodes: every module under ``signgen/`` and ``pipelines/`` (a package is its
  ``__init__.py``);
* edges: every ``import`` / ``from ... import`` statement anywhere in a module's file:
  at module level, and inside functions and methods ("lazy" imports, which run when the
  function is called and close a cycle all the same); relative imports are resolved.
  ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to
  ``pkg``. Importing ``a.b.c`` is an edge to ``a.b.c`` only, not to the parent packages
  Python also initialises (they hold no imports that could close a cycle, and counting
  them would make every submodule "depend" on its own package).

A cycle is a strongly connected component of more than one module of that graph, taken
separately over the modules of ``signgen/`` and of ``pipelines/``: two modules that can
each reach the other through imports, so neither can be read, tested or changed alone.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("signgen", "pipelines")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out = {}
    for layer in LAYERS:
        for path in sorted((REPO / layer).rglob("*.py")):
            out[_module_name(path)] = path
    return out


def _imports(name: str, path: Path) -> Iterable[tuple[str, list[str]]]:
    """(imported module, imported names) of every import statement in ``path``."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield module, [a.name for a in node.names]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for module, names in _imports(name, path):
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
            if len(targets) < len(names) or not names:
                targets.append(module)
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _cycles(graph: dict[str, set[str]], layer: str) -> list[frozenset[str]]:
    """Strongly connected components (> 1 module) among the modules of ``layer``."""
    nodes = [m for m in graph if m == layer or m.startswith(layer + ".")]
    inside = set(nodes)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v] & inside):
            if w not in index:
                visit(w)
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
                found.append(frozenset(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(nodes)))
    try:
        for v in nodes:
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def _path_through(graph: dict[str, set[str]], component: frozenset[str]) -> str:
    """One import loop inside ``component``, for the failure message: a -> b -> ... -> a."""
    start = min(component)
    prev = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                loop = [v]
                while prev[loop[-1]] is not None:
                    loop.append(prev[loop[-1]])
                return " -> ".join([*reversed(loop), start])
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return ", ".join(sorted(component))


def test_the_walk_sees_lazy_and_relative_imports():
    """The graph is not vacuous: a function-level import and the app's edges are in it."""
    graph = _graph()
    assert "pipelines.ray_cluster" in graph["pipelines.render_many"]  # inside run_job
    assert {"signgen.cli", "pipelines.cli"} <= graph["pipelines.app"]
    assert "signgen.train.stages" in graph["signgen.train.cli"]
    cyclic = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(cyclic, "") == [] and _cycles({f"x.{k}": {f"x.{w}" for w in v}
                                                  for k, v in cyclic.items()}, "x") == [
        frozenset({"x.a", "x.b", "x.c"})
    ]  # fmt: skip


def test_the_library_never_imports_the_jobs_or_the_benchmarks():
    offenders = []
    for name, path in _modules().items():
        if not name.startswith("signgen"):
            continue
        for module, _ in _imports(name, path):
            top = module.split(".")[0]
            if top in ("pipelines", "benchmarks"):
                offenders.append(f"{path.relative_to(REPO)} imports {module}")
    assert not offenders, "the library (signgen/) imports the jobs layer:\n" + "\n".join(offenders)


@pytest.mark.parametrize("layer", LAYERS)
def test_no_import_cycles(layer):
    graph = _graph()
    cycles = [_path_through(graph, c) for c in _cycles(graph, layer)]
    assert not cycles, f"import cycles in {layer}/:\n" + "\n".join(cycles)


def test_every_dependency_is_a_plain_import():
    """No importlib.import_module / __import__ in signgen/ or pipelines/: a module loaded
    by name would be invisible to the walk above (the console script used to load the
    jobs' commands that way)."""
    found = []
    for _name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                if called in ("import_module", "__import__"):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not found, f"modules loaded by name: {found}"


def test_ray_is_started_in_one_place():
    """Every job starts or joins Ray through pipelines.ray_cluster (docs/architecture.md)."""
    callers = []
    for name, path in _modules().items():
        if name == "pipelines.ray_cluster":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "init"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "ray"
            ):
                callers.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not callers, f"ray.init outside pipelines/ray_cluster.py: {callers}"


def test_every_imported_distribution_is_declared():
    """A third-party module imported by signgen/ or pipelines/ comes from a distribution
    named in pyproject.toml's dependencies (or an optional extra)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared_specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        declared_specs += extra
    import re

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    declared = {norm(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0]) for spec in declared_specs}
    dists = packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    missing = set()
    for name, path in _modules().items():
        for module, _ in _imports(name, path):
            top = module.split(".")[0]
            if not top or top in stdlib or top in LAYERS or top == "__future__":
                continue
            owners = {norm(d) for d in dists.get(top, [])}
            if not owners & declared:
                missing.add(f"{top} ({', '.join(sorted(owners)) or 'not installed'})")
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"


# A function longer than this says why, in a comment that starts with "Long" or "Over 80
# lines", inside the function or in the comment block right above its ``def``
# (docs/architecture.md, "Long functions").
MAX_FUNCTION_LINES = 80
_WHY = ("# Long", "# Over 80 lines")


def _long_functions_without_a_reason(path: Path, root: Path = REPO) -> list[str]:
    lines = path.read_text().splitlines()
    found = []
    for node in ast.walk(ast.parse("\n".join(lines), filename=str(path))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        start = min([node.lineno] + [d.lineno for d in node.decorator_list])
        if node.end_lineno - node.lineno + 1 <= MAX_FUNCTION_LINES:
            continue
        above = []
        i = start - 2  # 0-based index of the line above the def (or its first decorator)
        while i >= 0 and lines[i].lstrip().startswith("#"):
            above.append(lines[i])
            i -= 1
        text = above + lines[node.lineno - 1 : node.end_lineno]
        if not any(line.lstrip().startswith(_WHY) for line in text):
            found.append(f"{path.relative_to(root)}:{node.lineno} {node.name}")
    return found


def test_the_long_function_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    bare = tmp_path / "bare.py"
    bare.write_text(f"def f():\n{body}\n")
    explained = tmp_path / "explained.py"
    explained.write_text(f"# Long: one assignment per line.\ndef f():\n{body}\n")
    assert _long_functions_without_a_reason(bare, tmp_path) == ["bare.py:1 f"]
    assert _long_functions_without_a_reason(explained, tmp_path) == []


def test_functions_over_80_lines_say_why():
    roots = ("signgen", "pipelines", "benchmarks", "tools")
    found = [
        hit
        for root in roots
        for path in sorted((REPO / root).rglob("*.py"))
        for hit in _long_functions_without_a_reason(path)
    ]
    assert not found, "functions over 80 lines without a comment saying why:\n" + "\n".join(found)


def _heavy_modules_after(code: str) -> list[str]:
    import subprocess

    code += "\nimport sys; print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    return eval(res.stdout.strip().splitlines()[-1])  # a list of names printed above


def test_the_command_line_and_the_read_stage_import_no_torch():
    """`signgen --help`, option checks and every Ray worker that runs a read task of
    render-many (it imports the read stage's module) start without torch and diffusers,
    which take seconds to import (signgen/names.py, pipelines/read_stage.py)."""
    assert _heavy_modules_after("import pipelines.read_stage") == []
    assert (
        _heavy_modules_after(
            "from signgen.sampling.options import RenderOptions; RenderOptions(scheduler='DPMpp', "
            "dtype='bf16', steps=3)"
        )
        == []
    )
    assert (
        _heavy_modules_after(
            "import io, contextlib; from pipelines.app import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try: main(['render', '--help'])\n"
            "    except SystemExit: pass"
        )
        == []
    )
    from pipelines.read_stage import read_clip
    from pipelines.render_many import build_dataset

    assert read_clip.__module__ == "pipelines.read_stage"  # what Ray pickles by reference
    assert "read_clip" in build_dataset.__code__.co_names


def test_the_light_names_are_the_heavy_modules_names():
    from signgen.devices import DTYPES
    from signgen.models.schedulers import SCHEDULERS
    from signgen.names import DTYPE_NAMES, SCHEDULER_NAMES

    assert tuple(SCHEDULERS) == SCHEDULER_NAMES and tuple(DTYPES) == DTYPE_NAMES
