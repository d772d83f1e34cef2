"""The hubedge command line, as a user meets it: results on stdout, one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hubedge.cli import main

REPO = Path(__file__).resolve().parent.parent


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_table_json_and_filter(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0 and "bit-m-r50x1-in21k" in out and "74 model(s)" in out and "efficientnet-lite0" in out
    code, out, _ = run(capsys, "models", "--json", "*-in21k")
    rows = json.loads(out)
    assert code == 0 and {r["name"] for r in rows} == {f"bit-m-{v}-in21k" for v in
                                                       ("r50x1", "r50x3", "r101x1", "r101x3", "r152x4")}
    assert all(r["activation"] == "sigmoid" and r["num_outputs"] == 21843 for r in rows)


def test_predict_json_gives_labelled_top5_per_image(capsys, tiny_classifier, photos):
    code, out, err = run(capsys, "predict", "--json", "--model", str(tiny_classifier.savedmodel_dir),
                         str(photos[0]), str(photos[1]))
    assert code == 0, err
    records = json.loads(out)
    assert [r["image"] for r in records] == [str(photos[0]), str(photos[1])]
    for record in records:
        top = record["top_k"]
        assert len(top) == 5 and all(set(p) >= {"index", "label", "score"} for p in top)
        assert all(isinstance(p["label"], str) and p["label"] and not p["label"].startswith("class ") for p in top)
        scores = [p["score"] for p in top]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0  # softmax head


def test_predict_feature_vector_reports_size_and_norm(capsys, tiny_features, photos):
    code, out, _ = run(capsys, "predict", "--json", "--model", str(tiny_features.savedmodel_dir), str(photos[0]))
    (record,) = json.loads(out)
    assert code == 0 and record["dim"] == 1024 and record["norm"] > 0
    code, out, _ = run(capsys, "predict", "--model", str(tiny_features.savedmodel_dir), str(photos[0]))
    assert code == 0 and "feature vector, dim 1024" in out


def test_export_writes_a_verified_artifact_and_manifest_that_predict_runs(capsys, tiny_classifier, photos, tmp_path):
    code, out, err = run(capsys, "export", "--model", str(tiny_classifier.savedmodel_dir), "--format", "savedmodel",
                         "--output", str(tmp_path))
    assert code == 0, err
    artifact = tmp_path / "tiny-bit-ilsvrc.savedmodel.fp32.savedmodel"
    manifest = json.loads((tmp_path / "tiny-bit-ilsvrc.savedmodel.fp32.json").read_text())
    assert artifact.is_dir() and str(artifact) in out and " ok " in out
    assert manifest["schema"] == "hubedge.manifest/1" and manifest["format"] == "savedmodel"
    assert manifest["weights"]["source"] == "seeded" and len(manifest["weights"]["sha256"]) == 64
    assert manifest["verification"]["passed"] and manifest["verification"]["max_abs_diff"] == 0.0
    assert manifest["model"]["labels"] == "ilsvrc2012" and manifest["tools"]["tensorflow"] != "not installed"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hubedge-tmp")]
    code, out_artifact, _ = run(capsys, "predict", "--json", "--model", str(artifact), str(photos[0]))
    code_src, out_source, _ = run(capsys, "predict", "--json", "--model", str(tiny_classifier.savedmodel_dir),
                                  str(photos[0]))
    assert code == code_src == 0 and json.loads(out_artifact) == json.loads(out_source)


@pytest.mark.parametrize("argv, message", [
    # a model (not an artifact) runs on the TF reference: these need the export extra
    pytest.param(["predict", "--model", "bit-m-r50x1-in2lk", "IMG"], "unknown model 'bit-m-r50x1-in2lk': did you mean",
                 marks=pytest.mark.export),
    pytest.param(["predict", "--model", "bit-m-r50x1-in21k", "IMG"],
                 "cannot download https://tfhub.dev/google/bit/m-r50x1", marks=pytest.mark.export),
    pytest.param(["predict", "--model", "EMPTY_DIR", "IMG"], "is not a SavedModel directory", marks=pytest.mark.export),
    (["predict", "--model", "bit-m-r50x1-in21k", "MISSING.jpg"], "image file not found"),
    (["predict", "--model", "bit-m-r50x1-in21k", "NOT_AN_IMAGE.jpg"], "is not a readable image"),
    (["export", "--model", "bit-m-r50x1-in21k", "--format", "savedmodel", "--quantize", "int8"],
     "unsupported format/precision: savedmodel int8"),
    (["export", "--model", "bit-m-r50x1-in21k", "--format", "zip"], "unknown format 'zip'"),
    (["export", "--model", "bit-m-r50x1-in21k", "--format", "savedmodel", "--quantize", "int4"], "unknown --quantize"),
    (["export", "--model", "bit-m-r50x1-in21k", "--format", "onnx,openvino", "--quantize", "dynamic"],
     "unsupported format/precision: onnx dynamic (it offers fp32, fp16, int8); openvino dynamic"),
    (["export", "--model", "bit-m-r50x1-in21k", "--format", "tflite", "--quantize", "int8", "--calibration-data",
      "EMPTY_DIR"], "no calibration images in"),
    (["export", "--model", "bit-m-r50x1-in21k", "--format", "tflite", "--quantize", "int8", "--calibration-data",
      "MISSING_DIR"], "image folder not found"),
    (["export", "--model", "bit-m-r50x1-in21k", "--format", "onnx", "--quantize", "int8", "--int8-io"],
     "int8_io (--int8-io) applies to tflite int8 exports only"),
    (["export", "--model", "bit-m-r50x1-in21k", "--format", "tflite", "--calibration-size", "80"],
     "calibration_size (--calibration-size) applies to tflite int8, onnx int8"),
])
def test_bad_input_gets_one_line_and_a_non_zero_exit(capsys, tmp_path, photos, argv, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.jpg").write_text("not a picture")
    replace = {"IMG": str(photos[0]), "EMPTY_DIR": str(tmp_path / "empty"), "MISSING.jpg": str(tmp_path / "no.jpg"),
               "MISSING_DIR": str(tmp_path / "nowhere"),
               "NOT_AN_IMAGE.jpg": str(tmp_path / "notes.jpg")}
    code, out, err = run(capsys, *[replace.get(a, a) for a in argv])
    lines = [line for line in err.splitlines() if line.startswith("hubedge: error:")]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err and out == ""


def test_format_all_exports_what_each_format_offers(capsys, tiny_features, tmp_path):
    code, out, err = run(capsys, "export", "--model", str(tiny_features.savedmodel_dir), "--format", "all",
                         "--quantize", "fp16", "--output", str(tmp_path))
    assert code == 0, err
    assert "skips what a format does not offer: savedmodel fp16, qnn fp16" in err
    assert "--format all leaves out ort, exported only when named" in err
    assert sorted(p.name for p in tmp_path.glob("*.json")) == [
        f"tiny-bit-features.{name}.fp16.json" for name in ("onnx", "openvino", "tflite")]


def test_unwritable_output_folder_is_refused_before_work(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run(capsys, "export", "--model", "bit-m-r50x1-in21k", "--weights", "seeded",
                       "--format", "savedmodel", "--output", str(blocker / "sub"))
    assert code == 2 and "cannot create the output folder" in err and "loading" not in err


def _offline_env() -> dict[str, str]:
    """No network for a child process: every HTTP(S) request goes to a closed port on this machine."""
    closed = "http://127.0.0.1:9"
    return {**os.environ, "http_proxy": closed, "https_proxy": closed, "HTTP_PROXY": closed, "HTTPS_PROXY": closed,
            "no_proxy": "", "NO_PROXY": ""}


def test_predict_pins_the_reference_threads_before_tensorflow_starts(tiny_classifier, photos):
    hubedge = Path(sys.executable).with_name("hubedge")
    result = subprocess.run([str(hubedge), "predict", "--threads", "1", "--json", "--model",
                             str(tiny_classifier.savedmodel_dir), str(photos[0])],
                            capture_output=True, text=True, env=_offline_env(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)[0]["top_k"]) == 5


@pytest.mark.export
def test_console_script_and_module_entry_points(photos):
    hubedge = Path(sys.executable).with_name("hubedge")
    result = subprocess.run([str(hubedge), "predict", "--model", "expert-conveyance", str(photos[0])],
                            capture_output=True, text=True, env=_offline_env(), timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "hubedge: error: cannot download https://tfhub.dev/google/experts/bit/r50x1/in21k/conveyance/1" \
        in result.stderr and "--weights seeded" in result.stderr
    module = subprocess.run([sys.executable, "-m", "hubedge", "export", "--help"], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert module.returncode == 0 and "usage: hubedge export" in module.stdout and "--quantize" in module.stdout
