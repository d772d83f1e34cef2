"""The wheel built from the repository: built without a warning, and holding every data file the package reads."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_builds_quietly_and_ships_the_photos_and_labels_verification_reads(tmp_path):
    """Built offline from a copy of the tracked files (pip's own build backend from the dev extra, no build
    isolation), so that no build folder lands in the checkout."""
    source = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if name.startswith(("tests/", "docs/", "benchmarks/records/", ".")):
            continue
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes((ROOT / name).read_bytes())
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                            "--no-index", "-w", str(tmp_path / "wheel")], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    said = [line for line in (built.stdout + built.stderr).splitlines()
            if "warning" in line.lower() and not line.startswith("WARNING: Location 'file:")]
    assert not said, said[:5]
    names = set(zipfile.ZipFile(next((tmp_path / "wheel").glob("hubedge-*.whl"))).namelist())
    data = [path.relative_to(ROOT).as_posix() for pattern in ("calibration_data/*.jpg", "calibration_data/evaluation/*.jpg",
                                                               "runtimes/labels/*.txt", "calibration_data/photos.tsv")
            for path in ROOT.glob(pattern)]
    assert len(data) > 60 and not [name for name in data if name not in names]
