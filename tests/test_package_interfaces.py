"""The packages' boundaries: imports point one way, and what one package imports from another is public there.

Runtimes stand alone (an edge device installs only them); the exporter uses runtimes and the photos, never the
benchmarks; the benchmarks use runtimes, and the exporter only to rebuild a TF reference; the command line
(``hubedge.cli``, ``hubedge.demo``) uses them all and nothing uses it. A name another package imports must be in the
module's ``__all__``, so that a module's interface is written down where it is defined.

Every package is imported by its installed name, ``hubedge.<package>`` (pyproject's package-dir): the folders'
own names (``exporter``, ``runtimes``, ...) would load a second copy of a module from a checkout, and collide with a
user's folder of the same name. Below, packages are named by their folder, the command line as ``cli``.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARIES = ("runtimes", "calibration_data", "exporter", "benchmarks")
PACKAGES = (*LIBRARIES, "cli")
MAY_IMPORT = {
    "runtimes": set(),
    "calibration_data": set(),
    "exporter": {"runtimes", "calibration_data"},
    "benchmarks": {"runtimes", "exporter", "calibration_data"},
    "cli": {"runtimes", "calibration_data", "exporter", "benchmarks"},
}
# where each package's files are (the command line is hubedge/ less its root __init__, which anyone may import for
# ``__version__``: it imports nothing)
FOLDERS = {**{package: REPO / package for package in LIBRARIES}, "cli": REPO / "hubedge"}


def _package_of(module: str) -> str | None:
    """``hubedge.exporter.api`` → exporter, ``hubedge.cli.bench`` → cli; None for other modules and the root."""
    parts = module.split(".")
    if parts[0] != "hubedge" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in LIBRARIES else "cli"


def _import_nodes(path: Path):
    """(imported module, names) of every absolute import in a file, at any depth (lazy imports count)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            yield from ((alias.name, []) for alias in node.names)


def _sources() -> list[tuple[str, Path]]:
    return [(package, path) for package, folder in FOLDERS.items() for path in sorted(folder.rglob("*.py"))
            if "records" not in path.parts and path != REPO / "hubedge" / "__init__.py"]


def _imports() -> list[tuple[str, Path, str, list[str]]]:
    """(importing package, file, imported module, names) for every absolute import between hubedge's packages.
    ``from hubedge import exporter`` is an import of ``hubedge.exporter``."""
    found = []
    for package, path in _sources():
        for module, names in _import_nodes(path):
            if module == "hubedge":
                found += [(package, path, f"hubedge.{name}", []) for name in names
                          if name in LIBRARIES and name != package]
                continue
            target = _package_of(module)
            if target is not None and target != package:
                found.append((package, path, module, names))
    return found


def test_code_and_tests_import_only_the_installed_names():
    """No ``import runtimes`` / ``from exporter import ...``: each would load the folder as a package of its own."""
    files = [path for _, path in _sources()] + sorted((REPO / "tests").rglob("*.py")) + sorted(
        (REPO / "benchmarks" / "records").rglob("*.py"))
    bare = [f"{path.relative_to(REPO)}: {module}" for path in files for module, _ in _import_nodes(path)
            if module.split(".")[0] in LIBRARIES]
    assert not bare, bare


def test_imports_between_packages_point_one_way():
    wrong = [f"{path.relative_to(REPO)} imports {module}" for package, path, module, _ in _imports()
             if _package_of(module) not in MAY_IMPORT[package]]
    assert not wrong, wrong


def test_what_a_package_imports_from_another_is_in_that_modules_all():
    missing = []
    for _, path, module, names in _imports():
        target = importlib.import_module(module)
        public = getattr(target, "__all__", None)
        for name in names:
            if importlib.util.find_spec(f"{module}.{name}") if hasattr(target, "__path__") and not hasattr(
                    target, name) else isinstance(getattr(target, name, None), type(importlib)):
                continue  # a submodule, not a name the module defines
            if public is None or name not in public:
                missing.append(f"{path.relative_to(REPO)}: {module}.{name}")
    assert not missing, sorted(set(missing))


def test_every_name_in_all_exists():
    for module in sorted({module for _, _, module, _ in _imports()}):
        target = importlib.import_module(module)
        absent = [name for name in getattr(target, "__all__", ()) if not hasattr(target, name)]
        assert not absent, f"{module}.__all__ names what it lacks: {absent}"


# The exporter's stages, from the top of the pipeline down: a module imports its own stage or a lower rank, never a
# higher one, and never another stage of its own rank (graph and verify know nothing of each other). A new module
# must be given a stage here.
EXPORTER_STAGES = {
    "exporter.zoo": 8, "exporter.api": 7, "exporter.pipeline": 6,
    "exporter.graph": 5, "exporter.verify": 5, "exporter.manifest": 5, "exporter.memory_budget": 5,
    "exporter.formats": 4, "exporter.options": 3, "exporter.quantize": 2, "exporter.sources": 1, "exporter.fsutil": 0,
}
# the one import that runs back up: the accuracy-aware search builds the export options of its trials
EXPORTER_BACK_EDGES = {("exporter.quantize.accuracy", "exporter.options")}


def _stage(module: str) -> str | None:
    return next((stage for stage in EXPORTER_STAGES if module == stage or module.startswith(stage + ".")), None)


def _submodule_or_package(package: str, name: str) -> str:
    """``from package import name``: the submodule ``package.name`` where there is one, else ``package``."""
    folder = REPO.joinpath(*package.split("."))
    return f"{package}.{name}" if (folder / f"{name}.py").exists() or (folder / name).is_dir() else package


def _exporter_imports() -> list[tuple[str, str, Path]]:
    """(importing module, imported module, file) for every import between the exporter's own modules, named without
    the ``hubedge.`` prefix; ``from hubedge.exporter import name`` counts as an import of the submodule
    ``exporter.name``, or of the package itself."""
    found = []
    for path in sorted((REPO / "exporter").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for imported, names in _import_nodes(path):
            if imported == "hubedge":
                targets = [name for name in names if name in LIBRARIES]
            elif not imported.startswith("hubedge."):
                continue
            elif names:
                targets = [_submodule_or_package(imported.removeprefix("hubedge."), name) for name in names]
            else:
                targets = [imported.removeprefix("hubedge.")]
            found += [(module, target, path) for target in targets
                      if target.split(".")[0] == "exporter" and target != module]
    return found


def test_every_exporter_module_has_a_stage():
    modules = {".".join(path.relative_to(REPO).with_suffix("").parts) for path in (REPO / "exporter").rglob("*.py")}
    unstaged = sorted(module for module in modules if module != "exporter.__init__" and _stage(module) is None)
    assert not unstaged, f"give these a stage in EXPORTER_STAGES: {unstaged}"


def test_imports_between_the_exporters_stages_point_down():
    wrong = []
    for importer, imported, path in _exporter_imports():
        if imported == "exporter":
            continue  # the package's front (``__version__``, the public API): anyone may use it
        source, target = _stage(importer), _stage(imported)
        if source == target or (importer, imported) in EXPORTER_BACK_EDGES:
            continue
        if importer == "exporter" or EXPORTER_STAGES[target] < EXPORTER_STAGES[source]:
            continue
        wrong.append(f"{path.relative_to(REPO)}: {source} imports {imported} ({target})")
    assert not wrong, wrong


def test_the_stage_rule_sees_an_upward_import():
    """The rule's own check: the imports it reads include known downward ones, and an upward one would be caught."""
    imports = {(importer, imported) for importer, imported, _ in _exporter_imports()}
    # via ``from hubedge.exporter.verify import ...``
    assert ("exporter.pipeline", "exporter.verify.mobile_sdk") in imports
    assert ("exporter.formats.onnx", "exporter.quantize.accuracy") in imports
    assert EXPORTER_STAGES[_stage("exporter.formats.onnx")] > EXPORTER_STAGES[_stage("exporter.quantize.accuracy")]
    assert EXPORTER_STAGES[_stage("exporter.sources.bit")] < EXPORTER_STAGES[_stage("exporter.graph.reauthor")]


def test_the_architecture_page_names_every_exporter_module_in_its_stage_and_rank():
    """docs/architecture.md's stage table is the map a newcomer reads: it cannot drift from the folders or the rule."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text[text.index("## The exporter's stages"):].split("\n## ")[0]
    documented, rank, folder = set(), None, ""
    for row in table.splitlines():
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[2].startswith("`"):
            continue
        if cells[0]:
            rank, folder = int(cells[0]), cells[1].strip("`")
        for name in cells[2].replace("`", "").split(","):
            module = f"exporter/{folder}{name.strip()}.py"
            assert (REPO / module).exists(), f"docs/architecture.md names {module}, which does not exist"
            dotted = module[:-3].replace("/", ".").removesuffix(".__init__")
            assert EXPORTER_STAGES[_stage(dotted)] == rank, f"{dotted}: rank {rank} in the docs"
            documented.add(module)
    modules = {str(path.relative_to(REPO)) for path in (REPO / "exporter").rglob("*.py")
               if path.name != "__init__.py" or path.parent.name in ("sources", "formats")}
    assert modules - documented == set(), f"not in docs/architecture.md: {sorted(modules - documented)}"
