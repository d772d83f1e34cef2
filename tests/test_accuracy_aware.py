"""Accuracy-aware int8 (exporter.quantize.accuracy): the target's form, the search for the fewest float layers, and the
routes on a tiny twin (same code path as the full models; the trained-weights runs are in
test_export_accuracy_aware.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hubedge.exporter.quantize.accuracy import (A16, FLOAT, SearchResult, TargetUnreachable, TuningSplit,
                                                fewest_float_layers, float_layer_limit)
from hubedge.exporter.quantize.accuracy_target import AccuracyTarget
from hubedge.exporter.options import ExportOptions
from hubedge.runtimes.errors import InvalidInputError
from tests.test_cli import run

SPLIT = TuningSplit(images=np.zeros((4, 2, 2, 3)), reference=np.zeros((4, 2)), description="tuning split: hand-made")


def test_a_target_is_parsed_from_its_text_and_refused_in_one_line_when_wrong():
    target = AccuracyTarget.parse("top1_margin=0.995, top5=0.97")
    assert target.limits == (("top1_margin", 0.995), ("top5", 0.97)) and target.spec == "top1_margin=0.995,top5=0.97"
    assert ExportOptions(accuracy_target="sqnr_db=25").accuracy_target == AccuracyTarget((("sqnr_db", 25.0),))
    for text, words in (("top1=1.5", r"share in \(0, 1\]"), ("speed=2", "metric=value"), ("top5", "metric=value"),
                        ("sqnr_db=-3", "positive"), ("top5=x", "needs a number"), ("", "empty"),
                        ("top5=0.9,top5=0.8", "twice"), ("top1=nan", "share")):
        with pytest.raises(InvalidInputError, match=words) as error:
            AccuracyTarget.parse(text)
        assert "\n" not in str(error.value)


def test_a_target_is_met_only_when_every_term_is_and_an_unmeasured_figure_is_not_met():
    target = AccuracyTarget.parse("top1_margin=0.99,sqnr_db=20")
    assert target.met({"top1_margin": 0.99, "sqnr_db": 20.0})
    assert target.missed({"top1_margin": 0.98, "sqnr_db": 25.0}) == [("top1_margin", 0.98, 0.99)]
    assert not target.met({"sqnr_db": 25.0})  # no image with a clear margin: not a pass
    assert target.score({"top1_margin": 0.99, "sqnr_db": math.inf}) == pytest.approx(1.0)
    assert target.score({"top1_margin": 1.0, "sqnr_db": 30.0}) > 1.0 > target.score({"top1_margin": 1.0, "sqnr_db": 19})


def _search(quality_by_count, limit_layers=16, target="sqnr_db=20"):
    """Runs the search over ``limit_layers`` ranked layers where keeping ``k`` float gives sqnr quality(k)."""
    seen = []

    def evaluate(kept_float):
        seen.append(len(kept_float))
        return {"sqnr_db": quality_by_count(len(kept_float))}

    result = fewest_float_layers({"by cost": [f"layer{i}" for i in range(limit_layers)]}, evaluate,
                                 AccuracyTarget.parse(target), SPLIT, "test")
    return result, seen


def test_the_search_finds_the_shortest_prefix_that_meets_the_target_in_few_trials():
    result, seen = _search(lambda k: 10 + 2 * k)  # met from k = 5 on
    assert isinstance(result, SearchResult) and result.float_layers == [f"layer{i}" for i in range(5)]
    assert seen == [0, 1, 2, 4, 8, 6, 5] and result.figures == {"sqnr_db": 20}
    assert [trial["met"] for trial in result.trials] == [False, False, False, False, True, True, True]
    plain, seen = _search(lambda k: 30)
    assert plain.float_layers == [] and seen == [0]  # plain int8 meets it: nothing kept float


def test_of_two_rankings_the_search_keeps_the_one_that_needs_fewer_float_layers():
    """Layer "b" alone fixes the model: the ranking that puts it first needs one float layer, the other three."""
    rankings = {"first": ["a", "c", "b", "d"], "second": ["b", "a", "c", "d"]}
    result = fewest_float_layers(rankings, lambda kept: {"sqnr_db": 30.0 if "b" in kept else 10.0},
                                 AccuracyTarget.parse("sqnr_db=20"), SPLIT, "test")
    assert result.float_layers == ["b"] and result.ranking == "second"
    assert [(t["ranking"], t["float_layers"]) for t in result.trials] == [
        ("none", 0), ("first", 1), ("first", 2), ("second", 1)]  # "first" meets nothing within the limit of 2
    record = result.record(AccuracyTarget.parse("sqnr_db=20"), SPLIT, "route", {"first": "x", "second": "y"}, 4)
    assert record["ranking"] == "second: y" and record["float_layers"] == [{"name": "b"}]


def test_an_unreachable_target_fails_in_one_line_naming_the_best_figure_and_never_goes_past_the_limit():
    with pytest.raises(TargetUnreachable) as error:
        _search(lambda k: 10 + k / 4)  # needs 40 float layers; at most 8 of 16 may be
    message = str(error.value)
    assert "\n" not in message and "at most 8 of its 16 quantized layers float" in message
    assert "best trial reached sqnr_db 12.0 with 8 float" in message
    assert float_layer_limit(16) == 8 and float_layer_limit(1) == 0
    with pytest.raises(TargetUnreachable):
        _search(lambda k: 100 if k == 1 else 0, limit_layers=1)  # the only layer float would be an fp32 "int8"


# plain int8 of the tiny twin reaches SQNR 15.1 dB (tflite), 18.2 (onnx), 19.6 (openvino) and 12.7 (qnn) on the
# tuning split. tflite loses what is left in its GroupNorms' int8 affine part, so its 16 dB needs a normalization
# float (the stem conv and the first GroupNorm give 16.5); keeping convs float barely helps onnx (GroupNorm is float
# there already);
# NNCF returns 4 of 18 layers to float for openvino's 21 dB, and qnn's 16-bit activations give 15.0 dB with 12 of
# 216 tensors
@pytest.mark.parametrize("fmt, sqnr, needs_kept", [("tflite", 16, True), ("onnx", 18, False), ("openvino", 21, True),
                                                   ("qnn", 15, True)])
def test_an_accuracy_aware_tiny_export_records_its_search_and_sits_beside_plain_int8(capsys, tmp_path, tiny_classifier,
                                                                                    fmt, sqnr, needs_kept):
    """Seeded logits make top-k meaningless, so the tiny twin's target is on SQNR, above what plain int8 reaches:
    some layers must stay float (on qnn, some activations at 16 bits)."""
    out, spec = tmp_path / "out", f"sqnr_db={sqnr}"
    code, stdout, err = run(capsys, "export", "--model", tiny_classifier.weights["savedmodel"], "--format", fmt,
                            "--quantize", "int8", "--accuracy-target", spec, "--output", str(out))
    assert code == 0, err
    manifest = json.loads(next(out.glob(f"*.{fmt}.int8-accuracy.json")).read_text())
    search = manifest["quantization"]["accuracy_aware"]
    kept = A16 if fmt == "qnn" else FLOAT  # 16-bit tensors, or float layers
    assert manifest["variant"] == "accuracy-aware" and search["target"] == spec
    assert search["tuning_figures"]["sqnr_db"] >= sqnr and "tuning split" in search["met_on"]
    assert needs_kept <= len(search[kept.list_key]) <= search[kept.limit_key] < search[f"quantized_{kept.items}"]
    assert manifest["verification"]["passed"] and manifest["verification"]["accuracy_target"]["target"] == spec
    assert f"accuracy target {spec}" in stdout and f"{kept.items} {kept.state}" in stdout
    assert not list(out.glob(f"*.{fmt}.int8.*"))  # the plain int8 name is left to plain int8
    if fmt == "tflite":  # a normalization is kept float as a whole: every op of its int8 arithmetic
        norms = [layer for layer in search["float_layers"] if "normalization_ops" in layer]
        assert norms and all(layer["normalization_ops"] >= 4 for layer in norms), search["float_layers"]
    if fmt == "qnn":  # the chosen tensors are 16-bit in the artifact itself, and it ran on the NPU where there is one
        from hubedge.exporter.formats import FORMATS
        from hubedge.exporter.pipeline import verification_device

        assert manifest["verification"]["device"] == verification_device(FORMATS["qnn"])
        artifact = next(out.glob("*.qnn.int8-accuracy.onnx"))
        assert set(_uint16_quantized(artifact)) >= {tensor["name"] for tensor in search["a16_tensors"]}


def _uint16_quantized(path) -> list[str]:
    """The tensors a QuantizeLinear node quantizes to uint16 in an ONNX file."""
    import onnx

    graph = onnx.load(str(path)).graph
    zero_points = {init.name: init.data_type for init in graph.initializer}
    return [node.input[0] for node in graph.node if node.op_type == "QuantizeLinear" and len(node.input) > 2
            and zero_points.get(node.input[2]) == onnx.TensorProto.UINT16]


def test_an_unreachable_target_fails_the_export_in_one_line_and_writes_nothing(capsys, tmp_path, tiny_classifier):
    """40 dB needs every layer float on the tiny twin (plain int8 15.1 dB; half of its 18 convs and 13
    normalizations float reach 19.2): the search stops at the limit and names the best trial, and no artifact,
    fp32 in int8's name or other, is written."""
    code, _, err = run(capsys, "export", "--model", tiny_classifier.weights["savedmodel"], "--format", "tflite",
                       "--quantize", "int8", "--accuracy-target", "sqnr_db=40", "--output", str(tmp_path))
    lines = [line for line in err.splitlines() if line.startswith("hubedge: error:")]
    assert code == 1 and len(lines) == 1, err
    assert "meets sqnr_db=40" in lines[0] and "the best trial reached sqnr_db" in lines[0]
    assert "at most 15 of its 31 quantized layers float" in lines[0]
    assert not list(tmp_path.rglob("*.tflite")) and not list(tmp_path.rglob("*.json"))


def test_what_an_accuracy_target_cannot_apply_to_is_refused_before_any_work(capsys, tmp_path, tiny_features):
    code, _, err = run(capsys, "export", "--model", tiny_features.weights["savedmodel"], "--format", "tflite",
                       "--quantize", "int8", "--accuracy-target", "top5=0.9", "--output", str(tmp_path))
    assert code != 0 and "exist only for classifiers" in err and not list(tmp_path.iterdir())
    code, _, err = run(capsys, "export", "--model", tiny_features.weights["savedmodel"], "--format", "tflite",
                       "--quantize", "fp16", "--accuracy-target", "sqnr_db=20", "--output", str(tmp_path))
    assert code != 0 and "accuracy_target (--accuracy-target) applies to" in err
    code, _, err = run(capsys, "export", "--model", tiny_features.weights["savedmodel"], "--format", "tflite",
                       "--quantize", "int8", "--tflite-int8-recipe", "full", "--accuracy-target", "sqnr_db=20",
                       "--output", str(tmp_path))
    assert code != 0 and "--tflite-int8-recipe full forbids" in err
