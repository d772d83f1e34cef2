"""The trained-weights yardstick through every CPU format and precision, judged on held-apart photos and their
crops, natively and, quantized, as an x86 CPU without VNNI (slow: 4-7 minutes alone,
benchmarks/records/test-timing.md). Its qnn int8 on the HTP simulator is a benchmark
(benchmarks/records/yardstick_qnn.py); qnn's route is tested per commit on tiny twins."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hubedge import calibration_data
from hubedge import runtimes
from hubedge.exporter.formats import FORMATS, YARDSTICK_GATED, YARDSTICK_TOP_K
from hubedge.exporter.pipeline import EVALUATION_CROPS
from hubedge.cli import main
from hubedge.runtimes import cpu
from tests.helpers import cpu_has_bf16
from tests.helpers import emulator_runs_here, no_vnni_emulator

pytestmark = pytest.mark.slow
EVALUATION_IMAGES = len(calibration_data.evaluation_photos()) * (EVALUATION_CROPS + 1)


FLOAT = ("fp32", "fp16", "bf16")
# --format all but qnn (a benchmark here, above) and the opt-in ort
CPU_FORMATS = [name for name, fmt in FORMATS.items() if not fmt.opt_in and name != "qnn"]
QUANTIZED = ("dynamic", "int8")


# slow (4-7 minutes alone, the longest item of the suite): a trained model to every CPU format and precision, each
# verified on the 132 images, the quantized ones also under QEMU as an x86 CPU without VNNI (on the 44 photos);
# exported once. qnn int8 is left to benchmarks/records/yardstick_qnn.py: its verification on the HTP simulator,
# the slowest step of the suite, checks an agreement figure, not a code path that tiny twins miss
@pytest.fixture(scope="module")
def exported(tmp_path_factory, efficientnet_lite0):
    out = tmp_path_factory.mktemp("yardstick-exports")
    floats = "none,fp16" + (",bf16" if cpu_has_bf16() else "")  # bf16 verifies only with bf16
    # Quantized kernels differ between CPU classes: those artifacts are also verified as the other x86 class (else
    # natively only). Float ones are verified natively: QEMU runs float arithmetic some 400 times slower than the
    # CPU it emulates on (6 float artifacts took 33 of a worker's minutes), and an emulated float check is a code
    # path that tiny twins test (test_cpu_classes.py). arm64 is verified on tiny twins (test_arm64.py), and on this
    # model by make demo (benchmarks/records/arm64.md)
    emulate = ["--verify-cpu", cpu.X86_NO_VNNI] if emulator_runs_here() else []
    model = ["export", "--model", efficientnet_lite0.weights["savedmodel"], "--output", str(out)]
    quantized = [[fmt for fmt in CPU_FORMATS if precision in FORMATS[fmt].precisions] for precision in QUANTIZED]
    # the float half as --format all (qnn offers no float precision); the quantized half by name, one precision a
    # run, since named formats refuse a precision they lack
    codes = [main([*model, "--format", "all", "--quantize", floats]),
             *(main([*model, "--format", ",".join(names), "--quantize", precision, *emulate])
               for names, precision in zip(quantized, QUANTIZED))]
    return max(codes), out


def _manifests(out):
    return {(m["format"], m["precision"]): m for m in
            (json.loads(p.read_text()) for p in out.glob("efficientnet-lite0.*.json"))}


def test_every_format_and_precision_is_written_and_judged_on_trained_weights(exported):
    code, out = exported
    manifests = _manifests(out)
    assert code == 0
    assert set(manifests) == {(name, p) for name in CPU_FORMATS for p in FORMATS[name].precisions
                              if p != "bf16" or cpu_has_bf16()}
    for (name, precision), manifest in manifests.items():
        verification = manifest["verification"]
        assert verification["passed"] and manifest["weights"]["source"] == "package", (name, precision)
        assert verification["images"] == EVALUATION_IMAGES and "2 crops of each" in verification["image_set"]
        if name == "savedmodel":
            continue
        top1, top5, top1_margin = YARDSTICK_TOP_K[precision]
        assert verification["target"] == {"top1": top1, "top5": top5, "top1_margin": top1_margin,
                                          "missed": verification["target"]["missed"]}
        assert verification["top1_margin_images"] == 109  # the images whose FP32 top-2 margin is at least 0.05
        if precision in YARDSTICK_GATED:  # met, and gated
            assert verification["top1"] >= top1 and verification["top5"] >= top5 and not verification["target"]["missed"]
        else:  # the quantized routes: a real model still ranks the photos much as the reference does
            assert verification["top1"] >= 0.85 and verification["cosine_min"] >= 0.94, (name, precision)  # 0.947+
            # plain int8's target is 0.98: met on an AMD EPYC (0.982 to 1.0); on an Intel Sapphire Rapids-class CPU
            # OpenVINO's int8 reached 0.972 (the others 0.982 to 1.0): its manifest records the miss
            assert verification["top1_margin"] >= 0.97, (name, precision)


def test_the_quantized_yardstick_keeps_what_the_photos_show(exported):
    _, out = exported
    for artifact in ("efficientnet-lite0.tflite.int8.tflite", "efficientnet-lite0.onnx.int8.onnx",
                     "efficientnet-lite0.openvino.int8.xml"):
        model = runtimes.load(out / artifact)
        coffee, panda = model.top_k(["calibration_data/skimage-coffee.jpg", "calibration_data/gcompris-giant-panda.jpg"])
        assert coffee[0].label == "espresso" and panda[0].label == "giant panda", artifact


def test_every_quantized_cpu_artifact_meets_its_floor_as_an_x86_cpu_without_vnni_too(exported):
    """The quantized recipes are right on every CPU class: verified natively and as an AVX2-only x86 (the CPU on
    which ONNX and OpenVINO int8 used to fall to cosine_min 0.72 / 0.84). Float ones claim it, unchecked here."""
    no_vnni_emulator()  # skips (or, under .ci/run, fails) where this class cannot be run here
    _, out = exported
    for (name, precision), manifest in _manifests(out).items():
        verification = manifest["verification"]
        assert verification["device"] == "cpu", (name, precision)
        if name == "savedmodel":
            continue  # the FP32 reference
        if precision == "bf16":  # runs only where the CPU has bf16 arithmetic, which no x86 without VNNI has
            assert manifest["cpu_classes"]["right_on"] == [cpu.X86_VNNI]
            assert cpu.X86_NO_VNNI not in verification["cpu_classes"]
            continue
        assert cpu.X86_NO_VNNI in manifest["cpu_classes"]["right_on"], (name, precision)
        if precision in FLOAT and cpu.cpu_class() != cpu.X86_NO_VNNI:  # natively only (the fixture says why)
            assert verification["cpu_classes_unchecked"][cpu.X86_NO_VNNI].startswith("not checked"), (name, precision)
            continue
        run = verification["cpu_classes"][cpu.X86_NO_VNNI]
        figures = run if run["emulated"] else verification
        assert run["passed"] and run["cpu"]["class"] == cpu.X86_NO_VNNI, (name, precision)
        assert not FORMATS[name].floors[precision].failures(figures), (name, precision)
        if precision == "int8":
            assert figures["cosine_min"] >= 0.94, (name, precision, figures["cosine_min"])  # saturated: 0.72


def _as_no_vnni(artifact, efficientnet_lite0, strict=True):
    """The artifact's agreement when its runtime runs as an x86 CPU without VNNI (emulated, or natively)."""
    from hubedge.runtimes.isolated import predict_isolated
    from hubedge.exporter.pipeline import evaluation_set
    from hubedge.runtimes.agreement import summarize

    evaluation = evaluation_set(224)
    images = evaluation.images[:: evaluation.views_per_photo]  # the photos, as export's emulated check uses
    outputs, _, seen = predict_isolated(artifact, "cpu", images, no_vnni_emulator(), strict=strict)
    assert seen["class"] == cpu.X86_NO_VNNI
    return summarize(efficientnet_lite0.reference().predict(images), outputs, "classification", "softmax")


# slow (1.5 minutes): two emulated runs and one OpenVINO int8 export, the controls that show the check can fail
def test_without_the_fixes_int8_saturates_as_an_x86_cpu_without_vnni(exported, efficientnet_lite0, tmp_path,
                                                                      monkeypatch):
    """The controls that show the check above can fail: ONNX Runtime's saturating kernels, and OpenVINO's
    full-range weights (--int8-cpu vnni, whose manifest says it is not right there)."""
    from hubedge.runtimes.onnx_runtime import PRECISE_INT8_ENV

    _, out = exported
    with monkeypatch.context() as patch:
        patch.setenv(PRECISE_INT8_ENV, "0")
        saturated = _as_no_vnni(out / "efficientnet-lite0.onnx.int8.onnx", efficientnet_lite0)
    assert saturated["cosine_min"] < 0.9
    code = main(["export", "--model", efficientnet_lite0.weights["savedmodel"], "--format", "openvino",
                 "--quantize", "int8", "--int8-cpu", "vnni", "--output", str(tmp_path)])
    if cpu.cpu_class() == cpu.X86_NO_VNNI:  # it cannot be verified on a CPU it is not right on: refused
        assert code == 2 and not list(tmp_path.iterdir())
        return
    manifest = json.loads((tmp_path / "efficientnet-lite0.openvino.int8.json").read_text())
    assert code == 0 and cpu.X86_NO_VNNI not in manifest["cpu_classes"]["right_on"]
    assert manifest["quantization"]["int8_cpu"] == "vnni"
    with pytest.raises(runtimes.DeviceUnavailableError, match="right only on x86-vnni, arm64"):
        _as_no_vnni(tmp_path / "efficientnet-lite0.openvino.int8.xml", efficientnet_lite0)  # strict refuses it there
    lenient = _as_no_vnni(tmp_path / "efficientnet-lite0.openvino.int8.xml", efficientnet_lite0, strict=False)
    assert lenient["cosine_min"] < 0.9


def test_openvino_int8_cannot_run_on_an_armv8_0_core_and_says_so_not_that_the_file_is_corrupt(exported):
    """On a Cortex-A53 OpenVINO's ARM plugin has no kernel for some int8 convolutions of this model (docs/arm64.md):
    the runtime's own cause and the CPU class are in one line, and the manifest does not claim that class."""
    from hubedge.runtimes.errors import CannotCompileError
    from hubedge.runtimes.isolated import run_isolated
    from tests.helpers import arm64_emulator

    _, out = exported
    manifest = _manifests(out)[("openvino", "int8")]
    assert cpu.ARM64_NO_DOTPROD not in manifest["cpu_classes"]["right_on"]
    assert cpu.ARM64_NO_DOTPROD in manifest["cpu_classes"]["not_on"]
    images = np.zeros((1, 224, 224, 3), np.float32)
    artifact = out / "efficientnet-lite0.openvino.int8.xml"
    with pytest.raises(runtimes.DeviceUnavailableError, match="right only on .*its manifest says: not claimed"):
        run_isolated(artifact, "cpu", images, arm64_emulator(cpu.ARM64_NO_DOTPROD))  # strict: the manifest says why
    with pytest.raises(CannotCompileError, match=r"cannot compile it for this CPU \(arm64-no-dotprod\): .*not initial"):
        run_isolated(out / "efficientnet-lite0.openvino.int8.xml", "cpu", images,
                     arm64_emulator(cpu.ARM64_NO_DOTPROD), strict=False)  # strict: refused, as not on that class


@pytest.mark.parametrize("precision,int8_io", [("fp32", None), ("int8", None), ("int8", "uint8")])
def test_image_classifier_agrees_with_hubedge_predict_on_trained_weights(exported, efficientnet_lite0, tmp_path,
                                                                          precision, int8_io):
    """MediaPipe's ImageClassifier, as a phone app calls it, ranks the photos as hubedge's predict does (the
    fixture's fp32 and int8 files; an int8 file with uint8 input pinned to raw pixels exported here)."""
    from hubedge.runtimes.labels import load_labels
    from tests.helpers import export_all
    from tests.test_mobile_sdk import PHOTOS, _mediapipe_scores, _pixels

    _, out = exported
    if int8_io is None:
        artifact = out / f"efficientnet-lite0.tflite.{precision}.tflite"
    else:
        (result,) = export_all(efficientnet_lite0, tmp_path, [("tflite", precision)], int8_io=int8_io).values()
        artifact = result.artifact
        assert result.verification["mobile_sdk"]["hubedge_preprocessing"]["max_abs_score_diff"] <= 1e-4
    pixels = _pixels(224)
    theirs, tops = _mediapipe_scores(artifact, pixels, 1000)
    predictor = runtimes.load(artifact)
    ours = runtimes.top_k_from_outputs(predictor.predict(pixels.astype(np.float32) / np.float32(255)), predictor.info)
    for row, predictions in enumerate(ours):
        best = sorted(range(1000), key=lambda i: -theirs[row, i])[:5]
        assert [p.index for p in predictions] == best, (precision, int8_io, PHOTOS[row])
        assert max(abs(p.score - theirs[row, p.index]) for p in predictions) <= 1e-4
    assert abs(theirs.sum(axis=1) - 1).max() < 1e-3  # probabilities: the softmax is in the graph
    cat = load_labels("ilsvrc2012").wordnet_ids.index(tops[0].category_name)
    assert "cat" in load_labels("ilsvrc2012").lemmas[cat]  # the skimage cat's top-1 is a cat class
