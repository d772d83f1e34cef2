"""The wheel built from the repository: built without a warning, holding every data file the package reads, and
working when installed outside the checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The wheel, built offline from a copy of the tracked files (pip's own build backend from the export extra,
    no build isolation), so that no build folder lands in the checkout; and what the build printed."""
    folder = tmp_path_factory.mktemp("wheel")
    source = folder / "src"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if name.startswith(("tests/", "docs/", "benchmarks/records/", ".")):
            continue
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes((ROOT / name).read_bytes())
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                            "--no-index", "-w", str(folder / "dist")], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    return next((folder / "dist").glob("hubedge-*.whl")), build


def test_the_wheel_builds_quietly_and_ships_the_photos_and_labels_verification_reads(built):
    wheel, build = built
    said = [line for line in (build.stdout + build.stderr).splitlines()
            if "warning" in line.lower() and not line.startswith("WARNING: Location 'file:")]
    assert not said, said[:5]
    names = set(zipfile.ZipFile(wheel).namelist())
    patterns = ("calibration_data/*.jpg", "calibration_data/evaluation/*.jpg", "calibration_data/photos.tsv",
                "runtimes/labels/*.txt")
    data = [f"hubedge/{path.relative_to(ROOT).as_posix()}" for pattern in patterns for path in ROOT.glob(pattern)]
    assert len(data) > 60 and not [name for name in data if name not in names]
    # one import name: every module of the wheel lives under hubedge/
    assert {name.split("/")[0] for name in names if name.endswith(".py")} == {"hubedge"}


@pytest.mark.export
def test_the_installed_wheel_predicts_and_exports_outside_the_checkout(built, tiny_classifier, photos, tmp_path):
    """The wheel installed into a folder of its own, ahead of everything on the path (the dependencies come from
    this environment; its editable install of the checkout is found only after it), run from a folder outside the
    checkout that holds a user's own ``benchmarks``, ``runtimes``, ``exporter`` and ``calibration_data`` packages:
    ``predict`` and a verified tiny export, which reads the evaluation photos from the installed package, and a
    user's script that imports both theirs and hubedge's."""
    wheel, _ = built
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(site), "TF_CPP_MIN_LOG_LEVEL": "3"}
    work = tmp_path / "elsewhere"
    for name in ("benchmarks", "runtimes", "exporter", "calibration_data"):
        (work / name).mkdir(parents=True)
        (work / name / "__init__.py").write_text(f"OWNER = 'the user'  # the user's own {name} package\n")

    def hubedge(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "hubedge", *args], capture_output=True, text=True, cwd=work,
                              env=env, timeout=900)

    (work / "script.py").write_text(
        "import benchmarks, runtimes\n"
        "import hubedge, hubedge.benchmarks, hubedge.calibration_data, hubedge.exporter, hubedge.runtimes\n"
        "assert benchmarks.OWNER == runtimes.OWNER == 'the user'\n"
        "print(*(m.__file__ for m in (hubedge, hubedge.benchmarks, hubedge.calibration_data, hubedge.exporter,\n"
        "                             hubedge.runtimes)))\n")
    where = subprocess.run([sys.executable, "script.py"], capture_output=True, text=True, cwd=work, env=env,
                           timeout=120)
    assert where.returncode == 0, where.stderr[-2000:]
    assert len(where.stdout.split()) == 5 and all(path.startswith(str(site)) for path in where.stdout.split()), where
    model = str(tiny_classifier.savedmodel_dir)
    predicted = hubedge("predict", "--json", "--model", model, str(photos[0]))
    assert predicted.returncode == 0 and json.loads(predicted.stdout), predicted.stderr[-2000:]
    exported = hubedge("export", "--model", model, "--format", "tflite", "--output", str(work / "out"))
    assert exported.returncode == 0, exported.stderr[-2000:]
    manifest = json.loads((work / "out" / "tiny-bit-ilsvrc.tflite.fp32.json").read_text())
    assert manifest["verification"]["passed"] and manifest["verification"]["images"] == 132
