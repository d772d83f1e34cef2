"""The packages' boundaries: imports point one way, and what one package imports from another is public there.

Runtimes stand alone (an edge device installs only them); the exporter uses runtimes and the photos, never the
benchmarks; the benchmarks use runtimes, and the exporter only to rebuild a TF reference; the command line
(``hubedge``) uses them all and nothing uses it. A name another package imports must be in the module's
``__all__``, so that a module's interface is written down where it is defined.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("runtimes", "calibration_data", "exporter", "benchmarks", "hubedge")
MAY_IMPORT = {
    "runtimes": set(),
    "calibration_data": set(),
    "exporter": {"runtimes", "calibration_data"},
    "benchmarks": {"runtimes", "exporter", "calibration_data"},
    "hubedge": {"runtimes", "calibration_data", "exporter", "benchmarks"},
}


def _imports() -> list[tuple[str, Path, str, list[str]]]:
    """(importing package, file, imported module, names) for every absolute import between hubedge's packages,
    at any depth in the file (lazy imports inside functions count)."""
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "records" in path.parts:  # measurement scripts, not the package
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    modules = [(node.module, [alias.name for alias in node.names])]
                elif isinstance(node, ast.Import):
                    modules = [(alias.name, []) for alias in node.names]
                else:
                    continue
                for module, names in modules:
                    if module.split(".")[0] in PACKAGES and module.split(".")[0] != package:
                        found.append((package, path, module, names))
    return found


def test_imports_between_packages_point_one_way():
    wrong = [f"{path.relative_to(REPO)} imports {module}" for package, path, module, _ in _imports()
             if module.split(".")[0] not in MAY_IMPORT[package]]
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
