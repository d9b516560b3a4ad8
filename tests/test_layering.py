"""The house's layering (STYLE.md, ARCHITECTURE.md): one import namespace, layers that only point down,
no import cycles; protocols/ is sans-I/O; only storage/ touches duckdb / pyarrow."""

from __future__ import annotations

import ast
import pathlib
import collections
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

IO_MODULES = {"asyncio", "socket", "serial", "serial_asyncio", "aiomqtt", "duckdb", "pyarrow", "time",
              "selectors", "ssl", "uvloop"}
STORAGE_ONLY = {"duckdb", "pyarrow"}


def _imports(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0], node.lineno


def _pyx_imports(path):
    for n, line in enumerate(path.read_text().splitlines(), 1):
        m = re.match(r"\s*(?:from|import|cimport)\s+([\w.]+)", line)
        if m:
            yield m.group(1).split(".")[0], n


def _python_files(*parts):
    for part in parts:
        p = ROOT / part
        if p.is_file():
            yield p
        elif p.is_dir():
            yield from sorted(p.rglob("*.py"))


def test_protocols_import_no_io():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}"
           for p in _python_files("protocols") for mod, line in _imports(p) if mod in IO_MODULES]
    bad += [f"{p.relative_to(ROOT)}:{line} imports {mod}"
            for p in sorted((ROOT / "ext").glob("*.pyx")) for mod, line in _pyx_imports(p) if mod in IO_MODULES]
    assert not bad, "protocols/ must stay sans-I/O:\n" + "\n".join(bad)


def test_only_storage_and_the_batch_jobs_import_duckdb_and_pyarrow():
    """The batch jobs (billing_core/jobs/) query the lake and the archive over DuckDB; the codecs, the
    head-end, the array kernels and the command line do not."""
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}"
           for p in _python_files("protocols", "headend", "billing_core", "cli.py")
           if "jobs" not in p.relative_to(ROOT).parts
           for mod, line in _imports(p) if mod in STORAGE_ONLY]
    assert not bad, "only storage/ and billing_core/jobs/ may import duckdb or pyarrow:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", ["gridhead.protocols.dlt645"])
def test_importing_protocols_pulls_in_no_io(package):
    # the interpreter itself loads some of these at start-up (zipimport loads time): compare to a bare start
    probe = f"import sys; print(','.join(sorted(set({sorted(IO_MODULES)!r}) & set(sys.modules))))"
    bare = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    out = subprocess.run([sys.executable, "-c", f"import {package}; " + probe], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    extra = set(out.stdout.strip().split(",")) - set(bare.stdout.strip().split(",")) - {""}
    assert not extra, f"importing {package} loaded I/O modules: {sorted(extra)}"


# -- first-party imports: the allowed-imports table -------------------------------------------------------
# layer (a module prefix under gridhead.) -> the prefixes its modules may import; the most specific layer
# of a module applies.  The shared vocabulary sits at the bottom: protocols.errors (the error classes),
# protocols.accel (kernel choice), storage.schema (register codes, quality flags), storage.paths.
VOCABULARY = ("protocols.errors", "protocols.accel", "storage.schema", "storage.paths")
LAYERS = {
    "": (),                                                   # gridhead/__init__.py
    "protocols": ("protocols",),                              # codecs: nothing of ours but their errors
    "storage": ("storage", *VOCABULARY),                      # lake, WAL, archive, views, state
    "billing_core": ("billing_core", *VOCABULARY),            # the pure array kernels
    "billing_core.jobs": ("billing_core", "storage", *VOCABULARY),   # batch jobs: through storage
    "headend": ("headend", "protocols", "storage"),           # the head-end (not its simulator)
    "headend.sim": ("headend", "protocols", "storage", "billing_core"),  # simulator and demo: above it
    "cli": ("",),                                             # the command line: everything
}
NOT_BELOW = {"headend": ("headend.sim",)}                     # within a layer: the core never imports these
PACKAGES = ("protocols", "storage", "billing_core", "headend")
OLD_TOP_LEVEL = {"cli", "storage", "protocols", "headend", "billing_core"}


def _module_of(path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _first_party():
    files = [ROOT / "__init__.py", ROOT / "cli.py"] + [p for d in PACKAGES for p in sorted((ROOT / d).rglob("*.py"))]
    return {_module_of(p): p for p in files}


def _type_only(tree) -> set:
    """The nodes inside ``if TYPE_CHECKING:`` blocks: imports for the type checker, never run."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            out.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return out


def _targets(mod: str, path, known: set, runtime: bool = False):
    """(imported first-party module, line) for every import of ``path``, at any depth (functions too);
    ``runtime``: only the imports that run (not those under ``if TYPE_CHECKING:``)."""
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_only(tree) if runtime else set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".") if pkg else []
                base = base[:len(base) - (node.level - 1)]
                src = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("gridhead"):
                src = node.module[len("gridhead."):] if node.module != "gridhead" else ""
            else:
                continue
            for a in node.names:
                sub = f"{src}.{a.name}".lstrip(".")
                yield (sub if sub in known else src), node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("gridhead."):
                    yield a.name[len("gridhead."):], node.lineno


def _layer(mod: str) -> str:
    return max((k for k in LAYERS if k == "" or mod == k or mod.startswith(k + ".")), key=len)


def _under(mod: str, prefix: str) -> bool:
    return prefix == "" or mod == prefix or mod.startswith(prefix + ".")


def _graph(runtime: bool = False):
    mods = _first_party()
    known = set(mods)
    return mods, {m: list(_targets(m, p, known, runtime)) for m, p in mods.items()}


def test_every_import_follows_the_layer_table():
    mods, graph = _graph()
    bad = []
    for m, targets in graph.items():
        layer = _layer(m)
        for t, line in targets:
            allowed = any(_under(t, a) for a in LAYERS[layer])
            forbidden = any(_under(t, f) and not _under(m, f) for f in NOT_BELOW.get(layer, ()))
            if not allowed or forbidden:
                bad.append(f"{mods[m].relative_to(ROOT)}:{line} ({layer or 'gridhead'}) imports gridhead.{t}")
    assert not bad, "imports against the layer table:\n" + "\n".join(bad)


def _cycles(graph) -> list[set]:
    edges = {m: {t for t, _ in ts if t in graph and t != m} for m, ts in graph.items()}
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):                          # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    """No module imports, at any depth, one that imports it back — inside functions too; an import under
    ``if TYPE_CHECKING:`` only names a type for the checker and is never run."""
    _mods, graph = _graph(runtime=True)
    assert not [sorted(c) for c in _cycles(graph)], f"import cycles: {[sorted(c) for c in _cycles(graph)]}"


def test_the_cycle_check_finds_a_lazy_import_back():
    """The checker itself: an import inside a function that closes a loop is a cycle; one under
    TYPE_CHECKING is not."""
    graph = {"a": [("b", 1)], "b": [("a", 5)], "c": []}
    assert _cycles(graph) == [{"a", "b"}]
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n"
                     "def f():\n    from . import b\n")
    skipped = _type_only(tree)
    kept = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and id(n) not in skipped]
    assert [a.name for n in kept for a in n.names] == ["TYPE_CHECKING", "b"]


def test_the_layer_table_catches_a_storage_import_of_billing_core(tmp_path):
    """The checker itself: a storage module importing a batch job is reported."""
    fake = tmp_path / "x.py"
    fake.write_text("from gridhead.billing_core.jobs import bills\nfrom . import lake\n")
    targets = [t for t, _ in _targets("storage.x", fake, {"billing_core.jobs.bills", "storage.lake"})]
    assert targets == ["billing_core.jobs.bills", "storage.lake"]
    assert not any(_under(targets[0], a) for a in LAYERS[_layer("storage.x")])


def test_nothing_imports_the_old_top_level_names():
    """Everything is under gridhead.: no module, test, benchmark or kernel imports cli, storage, protocols,
    headend or billing_core as a top-level name (from the checkout they would load a second copy)."""
    files = [p for p in sorted(ROOT.rglob("*.py")) if "build" not in p.relative_to(ROOT).parts[:1]
             and ".git" not in p.parts and p.name != "setup.py"]
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}" for p in files for mod, line in _imports(p)
           if mod in OLD_TOP_LEVEL]
    bad += [f"{p.relative_to(ROOT)}:{line} imports {mod}" for p in sorted((ROOT / "ext").glob("*.pyx"))
            for mod, line in _pyx_imports(p) if mod in OLD_TOP_LEVEL]
    assert not bad, "\n".join(bad)


def test_only_gridhead_is_installed(tmp_path):
    """setup.py installs the one package gridhead and every module of its subpackages, nothing else at
    the top level (egg_info lists what a wheel ships; a fresh one, as it adds to an old list)."""
    out = subprocess.run([sys.executable, "setup.py", "--quiet", "egg_info", "--egg-base", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    info = tmp_path / "gridhead.egg-info"
    assert (info / "top_level.txt").read_text().split() == ["gridhead"]
    shipped = {pathlib.PurePosixPath(line.strip()).as_posix().removeprefix("./")
               for line in (info / "SOURCES.txt").read_text().splitlines()}
    missing = [str(p.relative_to(ROOT)) for p in _first_party().values()
               if p.relative_to(ROOT).as_posix() not in shipped]
    assert not missing, f"modules a wheel would leave out: {missing}"


def test_every_kernel_is_chosen_at_import_and_listed():
    """Each module holding a kernel imports it statically (no names injected into globals()), and
    accel.USERS lists every holder of every kernel setup.py builds, so the tests can switch them all."""
    import importlib

    from gridhead.protocols import accel
    kernels = re.findall(r'"([\w.]+)": "ext/\w+\.pyx"', (ROOT / "setup.py").read_text())
    assert set(kernels) == {name for _m, _a, name in accel.USERS}
    for module, attr, name in accel.USERS:
        held = getattr(importlib.import_module(module), attr)
        assert held.__name__ in (name, name + "_py"), (module, held.__name__)
        path = ROOT / (module[len("gridhead."):].replace(".", "/") + ".py")
        assert f"import {name.rpartition('.')[2]} as {attr}" in path.read_text(), path
    injected = [str(p.relative_to(ROOT)) for p in _python_files("protocols", "headend", "billing_core", "storage")
                if re.search(r"accel\.bind\(|globals\(\)\s*,", p.read_text())]
    assert not injected, injected


def test_no_private_name_of_another_module():
    """Nothing outside a module uses its _private names: ``mod._name`` where ``mod`` is one of our
    modules imported by name (kernel modules ``_X`` themselves are modules, not private names)."""
    mods = _first_party()
    bad = []
    for m, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        ours = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("gridhead")):
                for a in node.names:
                    ours.add(a.asname or a.name)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("gridhead.") and a.asname:
                        ours.add(a.asname)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ours
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value.id}.{node.attr}")
    assert not bad, "private names used from outside their module:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", ["gridhead", "gridhead.headend", "gridhead.headend.sim", "gridhead.storage",
                                     "gridhead.billing_core", "gridhead.billing_core.jobs"])
def test_each_package_states_its_public_api(package):
    """Each package's __init__ has an __all__, and every name in it is importable from the package."""
    import importlib
    import importlib.util

    pkg = importlib.import_module(package)
    assert isinstance(getattr(pkg, "__all__", None), list) and pkg.__all__, f"{package} has no __all__"
    for name in pkg.__all__:
        assert hasattr(pkg, name) or importlib.util.find_spec(f"{package}.{name}") is not None, (package, name)


def test_one_class_per_name():
    """A class name means one class across the package — except the two codecs' own terms, one in each
    standard's package (``Frame``, ``Framer``, ``ErrorResponse`` and the error codes the standards name
    alike: DL/T 645-2007's error bits, DL/T 698.45's DAR)."""
    where = collections.defaultdict(list)
    for mod, path in _first_party().items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                where[node.name].append(mod)
    codecs = ("protocols.dlt645", "protocols.dlt698")
    bad = {name: mods for name, mods in where.items() if len(mods) > 1
           and not (len(mods) == 2 and {next((c for c in codecs if _under(m, c)), m) for m in mods} == set(codecs))}
    assert not bad, f"class names defined more than once: {bad}"
