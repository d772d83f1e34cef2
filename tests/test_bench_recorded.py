"""``hubedge bench`` where TensorFlow is not installed: agreement against the references recorded at export,
latency paired with the model's fp32 artifact, and the CI gate, all in a process that cannot import TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hubedge.benchmarks import runner

PAIRS = [("tflite", "fp32"), ("tflite", "int8"), ("onnx", "fp32"), ("onnx", "int8")]
BLOCK_TF = """
import sys
class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_hub", "tf_keras", "keras"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None
sys.meta_path.insert(0, NoTensorFlow())
from hubedge.cli import main
code = main(sys.argv[1:])
assert not [m for m in ("tensorflow", "tensorflow_hub", "tf_keras") if m in sys.modules], "TensorFlow was imported"
sys.exit(code)
"""
FAST = ["--runs", "3", "--warmup", "1", "--threads", "1", "--paired-blocks", "2"]


def _bench_without_tf(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TF, "bench", *args, *FAST], capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def artifacts(tiny_exports) -> list[str]:
    return [str(tiny_exports[pair].artifact) for pair in PAIRS]


@pytest.fixture(scope="module")
def recorded_run(artifacts, tmp_path_factory) -> tuple[dict, Path, subprocess.CompletedProcess]:
    folder = tmp_path_factory.mktemp("recorded")
    result = _bench_without_tf([*artifacts, "--json", str(folder / "run.json"),
                                "--save-baseline", str(folder / "baseline.json")])
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((folder / "run.json").read_text()), folder, result


def test_without_tensorflow_agreement_equals_the_tf_runs(recorded_run, artifacts):
    recorded, _, result = recorded_run
    tf_run = runner.run(artifacts, runner.BenchOptions(runs=3, warmup=1, threads=1, paired_blocks=2, paired_calls=2),
                       progress=lambda _: None)
    assert recorded["reference_mode"] == "recorded" and tf_run["reference_mode"] == "tf"
    assert "reference: the FP32 outputs recorded at export" in result.stderr
    assert not any(row.get("reference_kind") == "tf" for row in recorded["rows"])  # never a fake TF row
    tf_rows = {row["artifact"]: row for row in tf_run["rows"] if not row.get("reference")}
    for row in recorded["rows"]:
        expected = tf_rows[row["artifact"]]["agreement"]
        for key in ("cosine_min", "cosine", "top1", "top5"):
            assert abs(row["agreement"][key] - expected[key]) <= 1e-6, (row["artifact"], key)


def test_without_tensorflow_latency_is_paired_with_the_fp32_artifact_of_the_format(recorded_run):
    rows = {(row["format"], row["precision"]): row for row in recorded_run[0]["rows"]}
    for fmt in ("tflite", "onnx"):
        reference, int8 = rows[(fmt, "fp32")], rows[(fmt, "int8")]
        assert reference["reference"] and reference["reference_kind"] == "artifact"
        assert int8["reference_artifact"] == reference["artifact"] and int8["vs_reference"]["ratio"] > 0
        assert int8["speedup_vs_reference"] > 0


def test_the_gate_runs_without_tensorflow_and_refuses_other_modes(recorded_run, artifacts):
    _, folder, _ = recorded_run
    passed = _bench_without_tf([*artifacts, "--baseline", str(folder / "baseline.json"), "--max-slowdown", "1000%"])
    assert passed.returncode == 0 and "passed" in passed.stderr.splitlines()[-1], passed.stderr[-2000:]
    doctored = json.loads((folder / "baseline.json").read_text())
    for row in doctored["rows"]:
        if "vs_reference" in row:
            row["vs_reference"]["ratio"] /= 100.0  # a baseline 100x faster relative to its reference
    (folder / "doctored.json").write_text(json.dumps(doctored))
    failed = _bench_without_tf([*artifacts, "--baseline", str(folder / "doctored.json")])
    assert failed.returncode == 1 and "REGRESSION" in failed.stderr, failed.stderr[-2000:]
    doctored["reference_mode"] = "tf"
    (folder / "tf-mode.json").write_text(json.dumps(doctored))
    refused = _bench_without_tf([*artifacts, "--baseline", str(folder / "tf-mode.json")])
    assert refused.returncode == 2
    assert "taken with --reference-mode tf and this run used recorded" in refused.stderr.strip().splitlines()[-1]


# what `pip install hubedge[tflite,gate]` brings: hubedge's core (numpy, Pillow, tqdm, PyYAML), LiteRT, and scipy for
# the gate's significance test
LITERT_ONLY = ("ai_edge_litert", "numpy", "numpy.libs", "PIL", "pillow.libs", "tqdm", "yaml", "_yaml", "flatbuffers",
               "ml_dtypes", "google", "backports", "typing_extensions.py", "scipy", "scipy.libs")


def test_bench_runs_where_nothing_but_litert_is_installed(tiny_exports, tmp_path):
    """A runtimes-only device: a Python that sees hubedge's source, its core dependencies, LiteRT's wheel with its
    own and scipy (the gate extra), and no other site-packages at all (``-I -S``), runs ``hubedge bench`` with the
    gate; no network, no TensorFlow."""
    import numpy

    site_packages = Path(numpy.__file__).resolve().parents[1]
    site = tmp_path / "site"
    site.mkdir()
    for name in LITERT_ONLY:
        (site / name).symlink_to(site_packages / name)
    for info in site_packages.glob("*.dist-info"):
        if info.name.split("-")[0].lower() in ("ai_edge_litert", "numpy", "pillow", "tqdm", "pyyaml", "flatbuffers",
                                               "scipy"):
            (site / info.name).symlink_to(info)
    artifacts = [str(tiny_exports[("tflite", p)].artifact) for p in ("fp32", "int8")]
    code = (f"import sys; sys.path[:0] = [{str(Path(__file__).resolve().parents[1])!r}, {str(site)!r}]; "
            "from hubedge.cli import main; code = main(sys.argv[1:]); "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'onnxruntime', 'openvino')]; "
            "sys.exit(code)")
    run = subprocess.run([sys.executable, "-I", "-S", "-c", code, "bench", *artifacts, *FAST,
                          "--json", str(tmp_path / "run.json"), "--save-baseline", str(tmp_path / "base.json")],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["reference_mode"] == "recorded" and report["machine"]["versions"]["tensorflow"] == "not installed"
    assert [row["status"] for row in report["rows"]] == ["ok", "ok"]
    gate = subprocess.run([sys.executable, "-I", "-S", "-c", code, "bench", *artifacts, *FAST,
                           "--baseline", str(tmp_path / "base.json"), "--max-slowdown", "1000%"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert gate.returncode == 0 and "passed" in gate.stderr.splitlines()[-1], gate.stderr[-2000:]
