"""The trained-weights yardstick through every format and precision, judged on held-apart photos and their
crops (slow: about three minutes)."""

from __future__ import annotations

import json

import pytest

from exporter.cli import main
from exporter.formats import FORMATS, YARDSTICK_GATED, YARDSTICK_TOP_K
from tests.conftest import cpu_has_bf16

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory, efficientnet_lite0):
    out = tmp_path_factory.mktemp("yardstick-exports")
    precisions = "none,fp16,dynamic,int8" + (",bf16" if cpu_has_bf16() else "")  # bf16 verifies only with bf16
    code = main(["export", "--model", efficientnet_lite0.weights["savedmodel"], "--format", "all",
                 "--quantize", precisions, "--output", str(out)])
    return code, out


def _manifests(out):
    return {(m["format"], m["precision"]): m for m in
            (json.loads(p.read_text()) for p in out.glob("efficientnet-lite0.*.json"))}


def test_every_format_and_precision_is_written_and_judged_on_trained_weights(exported):
    code, out = exported
    manifests = _manifests(out)
    assert code == 0
    assert set(manifests) == {(name, p) for name, fmt in FORMATS.items() for p in fmt.precisions
                              if p != "bf16" or cpu_has_bf16()}
    for (name, precision), manifest in manifests.items():
        verification = manifest["verification"]
        assert verification["passed"] and manifest["weights"]["source"] == "package", (name, precision)
        assert verification["images"] == 45 and "4 crops of each" in verification["image_set"]
        if name == "savedmodel":
            continue
        top1, top5 = YARDSTICK_TOP_K[precision]
        assert verification["target"] == {"top1": top1, "top5": top5, "missed": verification["target"]["missed"]}
        if precision in YARDSTICK_GATED:  # met, and gated
            assert verification["top1"] >= top1 and verification["top5"] >= top5 and not verification["target"]["missed"]
        else:  # the quantized routes: a real model still ranks the photos much as the reference does
            assert verification["top1"] >= 0.85 and verification["cosine_min"] >= 0.95, (name, precision)


def test_the_quantized_yardstick_keeps_what_the_photos_show(exported):
    import runtimes

    _, out = exported
    for artifact in ("efficientnet-lite0.tflite.int8.tflite", "efficientnet-lite0.onnx.int8.onnx",
                     "efficientnet-lite0.openvino.int8.xml"):
        model = runtimes.load(out / artifact)
        coffee, panda = model.top_k(["calibration_data/skimage-coffee.jpg", "calibration_data/gcompris-giant-panda.jpg"])
        assert coffee[0].label == "espresso" and panda[0].label == "giant panda", artifact
