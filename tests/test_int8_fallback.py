"""int8 that misses its floor falls back to the fewest layers float that meet it (exporter.verify.fallback), on a tiny
twin whose floor is raised for the test above what its plain TFLite int8 reaches."""

from __future__ import annotations

import json

import pytest

from hubedge.exporter.verify.fallback import floor_target
from hubedge.exporter.formats import FORMATS, Floor
from tests.test_cli import run

# the tiny twin's plain TFLite int8 reaches cosine_min 0.913 on the verification images (0.911 on the tuning
# split); with 11 to 15 of its 31 layers float it reaches 0.964 on the tuning split
RAISED = Floor(cosine=0.95)


def test_the_floor_is_carried_to_the_tuning_split_by_plain_int8s_error_ratio():
    plain = {"cosine_min": 0.8, "top1": 0.5}
    # tuning error 0.1 against 0.2 on the verification images: half the floor's error, 0.05, on the tuning split
    assert floor_target(Floor(cosine=0.9), plain, {"cosine_min": 0.9, "top1": 0.9}).limits == (("cosine_min", 0.95),)
    # never below the floor where the tuning split is the harder set; terms the floor does not set are left out
    assert floor_target(Floor(cosine=0.9, top1=0.7), plain, {"cosine_min": 0.7, "top1": 0.4}).limits == (
        ("cosine_min", 0.9), ("top1", 0.7))
    assert floor_target(Floor(cosine=0.99), plain, {"cosine_min": 1.0}).limits == (("cosine_min", 1.0),)


@pytest.fixture
def raised_floor(monkeypatch):
    monkeypatch.setitem(FORMATS["tflite"].floors, "int8", RAISED)


def test_plain_int8_below_its_floor_falls_back_says_so_and_records_both_trials(capsys, tmp_path, tiny_classifier,
                                                                               raised_floor):
    code, out, err = run(capsys, "export", "--model", tiny_classifier.weights["savedmodel"], "--format", "tflite",
                         "--quantize", "int8", "--output", str(tmp_path))
    assert code == 0, err
    artifact = tmp_path / "tiny-bit-ilsvrc.tflite.int8.tflite"  # written where plain int8 would have gone
    manifest = json.loads(artifact.with_suffix(".json").read_text())
    quantization, verification = manifest["quantization"], manifest["verification"]
    assert "variant" not in manifest  # the int8 artifact of its name, not an accuracy-aware one beside plain int8
    fallback = quantization["int8_fallback"]
    plain = fallback["plain"]["verification"]
    assert plain["cosine_min"] < RAISED.cosine <= verification["cosine_min"] and verification["passed"]
    assert fallback["plain"]["failures"][0].startswith("cosine_min") and "tuning_figures" in fallback["plain"]
    assert fallback["target"].startswith("cosine_min=") and float(fallback["target"].split("=")[1]) >= RAISED.cosine
    search = quantization["accuracy_aware"]
    assert search["target"] == fallback["target"] and search["trials"][0]["float_layers"] == 0
    assert 1 <= len(search["float_layers"]) <= search["float_layer_limit"]
    assert verification["accuracy_target"]["target"] == fallback["target"] and verification["images"] == 132
    kept = len(search["float_layers"])
    line = next(line for line in out.splitlines() if line.strip().startswith("tflite int8: plain missed the floor"))
    assert f"(cosine_min {plain['cosine_min']:.6f} < 0.95" in line and f"{kept} of 31 layers float → cosine_min" in line
    assert "× plain's latency at export" in line
    assert "plain int8 missed its floor" in err and "searching for the fewest layers" in err
    assert not list(tmp_path.glob("*int8-accuracy*")) and not list(tmp_path.glob(".hubedge-*"))


def test_no_fallback_fails_as_plain_int8_did_and_writes_nothing(capsys, tmp_path, tiny_classifier, raised_floor):
    code, _, err = run(capsys, "export", "--model", tiny_classifier.weights["savedmodel"], "--format", "tflite",
                       "--quantize", "int8", "--int8-fallback", "none", "--output", str(tmp_path))
    errors = [line for line in err.splitlines() if line.startswith("hubedge: error:")]
    assert code == 1 and len(errors) == 1 and "FAILED verification (cosine_min" in errors[0], err
    assert "< 0.95" in errors[0] and "searching" not in err
    assert not list(tmp_path.iterdir())


def test_the_fallback_option_is_refused_where_no_int8_export_takes_it(capsys, tmp_path, tiny_classifier):
    code, _, err = run(capsys, "export", "--model", tiny_classifier.weights["savedmodel"], "--format", "tflite",
                       "--quantize", "fp16", "--int8-fallback", "none", "--output", str(tmp_path))
    assert code != 0 and "int8_fallback (--int8-fallback) applies to" in err and not list(tmp_path.iterdir())
