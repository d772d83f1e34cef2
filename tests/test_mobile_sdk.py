"""Every .tflite artifact works unchanged in MediaPipe Tasks, the SDK mobile apps load models with.

MediaPipe is called here through its own Python API (the same C++ core as on Android and iOS), independently
of the check export verification runs (exporter.verify.mobile_sdk), and the standard metadata is read back with
MediaPipe's metadata displayer, a reader independent of the writer. The trained-weights yardstick's .tflite
files are run through MediaPipe beside their export (test_export_efficientnet_lite.py), which makes them once.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from hubedge import calibration_data
from hubedge import runtimes
from hubedge.exporter.formats.tflite import pixel_input, read_metadata
from hubedge.exporter.formats.tflite_metadata import (minimum_parser_version, read_standard_metadata,
                                                      with_standard_metadata)
from hubedge.exporter.formats import FORMATS
from hubedge.exporter.verify.mobile_sdk import check
from hubedge.runtimes.preprocess import load_image, resize_square
from tests.helpers import export_all, tiny_spec

pytestmark = pytest.mark.export  # every test here builds, converts or reads with the export extra

CAT = "skimage-chelsea-cat.jpg"
PHOTOS = [CAT, "gcompris-giant-panda.jpg", "gcompris-crocodile.jpg", "sklearn-flower.jpg", "gcompris-koala.jpg"]


def _pixels(size: int, names=PHOTOS) -> np.ndarray:
    """The photos as hubedge preprocesses them (centre square crop, antialiased resize), as uint8 pixels."""
    folder = calibration_data.photos()[0].parent
    return np.stack([resize_square(load_image(folder / name), size) for name in names])


def _classifier(artifact):
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(artifact)), max_results=-1)
    return vision.ImageClassifier.create_from_options(options)


def _image(pixels: np.ndarray):
    import mediapipe as mp

    return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(pixels))


def _mediapipe_scores(artifact, pixels: np.ndarray, num_classes: int) -> tuple[np.ndarray, list]:
    """Every class's score for each image, and the top category of each, from ImageClassifier."""
    scores, tops = np.zeros((len(pixels), num_classes), np.float32), []
    with _classifier(artifact) as classifier:
        for row, image in enumerate(pixels):
            categories = classifier.classify(_image(image)).classifications[0].categories
            tops.append(categories[0])
            for category in categories:
                scores[row, category.index] = category.score
    return scores, tops


def _hubedge_scores(artifact, pixels: np.ndarray) -> np.ndarray:
    predictor = runtimes.load(artifact)
    return runtimes.activate(predictor.predict(pixels.astype(np.float32) / np.float32(255)),
                             predictor.info.pending_activation)


# slow (about 2 minutes with tiny_mobile_exports): 21843 sigmoid outputs are the geometry under test here, and the
# twin is exported to .tflite fp32 and int8 and verified, MediaPipe included
@pytest.fixture(scope="module")
def tiny_21k(tmp_path_factory):
    from hubedge.exporter.sources import build_twin

    return build_twin(tiny_spec(num_outputs=21843, name="tiny-bit-21k"), "seeded",
                      tmp_path_factory.mktemp("tiny") / "21k")


@pytest.fixture(scope="module")
def tiny_mobile_exports(tmp_path_factory, tiny_21k, tiny_features):
    out = tmp_path_factory.mktemp("mobile")
    return {"21k": export_all(tiny_21k, out, [("tflite", "fp32"), ("tflite", "int8")]),
            "features": export_all(tiny_features, out, [("tflite", "fp32")])}


def test_image_classifier_gives_hubedges_sigmoid_scores_on_a_21k_twin(tiny_mobile_exports):
    for precision in ("fp32", "int8"):
        result = tiny_mobile_exports["21k"][("tflite", precision)]
        pixels = _pixels(64)
        theirs, tops = _mediapipe_scores(result.artifact, pixels, 21843)
        ours = _hubedge_scores(result.artifact, pixels)
        assert np.max(np.abs(theirs - ours)) <= 1e-5, precision  # the calibration is the logistic function
        assert (theirs > 0).all() and (theirs < 1).all()  # sigmoids, not raw logits
        best = int(np.argmax(ours[0]))
        assert tops[0].index == best and tops[0].category_name.startswith("n")  # a WordNet id
        assert tops[0].display_name  # the lemma, from labels_en.txt
        mobile = result.verification["mobile_sdk"]
        assert mobile["passed"] and mobile["task"] == "ImageClassifier"
        assert set(mobile["sdk_preprocessing"]) == {"stretch", "centre_roi"}


def test_the_score_calibration_has_exactly_one_line_per_class(tiny_mobile_exports):
    artifact = tiny_mobile_exports["21k"][("tflite", "fp32")].artifact
    with zipfile.ZipFile(artifact) as packed:
        lines = packed.read("score_calibration.txt").decode().split("\n")
    assert len(lines) == 21843 and set(lines) == {"1.0,1.0,0.0"}


def test_a_second_reader_sees_the_standard_metadata(tiny_mobile_exports):
    artifact = tiny_mobile_exports["21k"][("tflite", "int8")].artifact
    read = read_standard_metadata(artifact.read_bytes())
    assert read["associated_files"] == ["labels.txt", "labels_en.txt", "score_calibration.txt"]
    graph = read["metadata"]["subgraph_metadata"][0]
    (image,) = graph["input_tensor_metadata"]
    normalization = image["process_units"][0]["options"]
    assert normalization == {"mean": [0.0], "std": [255.0]}
    assert image["content"]["content_properties"]["color_space"] == "RGB"
    (scores,) = graph["output_tensor_metadata"]
    assert scores["process_units"][0]["options_type"] == "ScoreCalibrationOptions"
    assert read["metadata"]["min_parser_version"] == "1.0.0"
    hubedge_entry = json.loads(read_metadata(artifact)["hubedge.model"])
    assert hubedge_entry["activation"] == "sigmoid" and hubedge_entry["activation_in_graph"] is False


def test_image_embedder_gives_hubedges_features(tiny_mobile_exports):
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    result = tiny_mobile_exports["features"][("tflite", "fp32")]
    pixels = _pixels(64)
    options = vision.ImageEmbedderOptions(base_options=BaseOptions(model_asset_path=str(result.artifact)),
                                          l2_normalize=False, quantize=False)
    with vision.ImageEmbedder.create_from_options(options) as embedder:
        theirs = np.stack([embedder.embed(_image(p)).embeddings[0].embedding for p in pixels])
    ours = runtimes.load(result.artifact).predict(pixels.astype(np.float32) / np.float32(255))
    assert theirs.shape == ours.shape == (len(PHOTOS), 1024)
    cosine = np.sum(theirs * ours, 1) / np.linalg.norm(theirs, axis=1) / np.linalg.norm(ours, axis=1)
    assert cosine.min() >= 0.99999
    assert result.verification["mobile_sdk"]["task"] == "ImageEmbedder"


def test_the_mobile_check_fails_an_artifact_whose_metadata_lies(tiny_mobile_exports, tiny_21k, tmp_path):
    """Normalisation metadata of [-1, 1] on a [0, 1] model: MediaPipe then computes something else."""
    import hubedge.exporter.formats.tflite_metadata as metadata

    result = tiny_mobile_exports["21k"][("tflite", "fp32")]
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(_strip_standard_metadata(result.artifact.read_bytes()))
    lying = tmp_path / "lying.tflite"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metadata, "INPUT_NORM_MEAN", [127.5])
        patch.setattr(metadata, "INPUT_NORM_STD", [127.5])
        lying.write_bytes(with_standard_metadata(bare.read_bytes(), tiny_21k.info, "lying"))
    pixels = _pixels(64)
    outputs = runtimes.load(result.artifact).predict(pixels.astype(np.float32) / np.float32(255))
    photos = [calibration_data.photos()[0].parent / name for name in PHOTOS]
    rows = list(range(len(PHOTOS)))
    record = check(lying, tiny_21k.info, pixels, outputs, photos, rows)
    assert not record["passed"] and record["failures"][0].startswith("MediaPipe against hubedge: max_abs_score_diff")
    assert record["shortfalls"][0]["metric"] == "max_abs_score_diff" and record["shortfalls"][0]["limit"] == 1e-4
    # where equality is not asked (dynamic range), the floor against the FP32 reference still catches it
    judged = (tiny_21k.reference().predict(pixels.astype(np.float32) / np.float32(255)), FORMATS["tflite"].floors["fp32"])
    floor_only = check(lying, tiny_21k.info, pixels, outputs, photos, rows, judged, exact=False)
    assert not floor_only["passed"] and floor_only["failures"][0].startswith("through MediaPipe: cosine_min")
    honest = check(result.artifact, tiny_21k.info, pixels, outputs, photos, rows, judged)
    assert honest["passed"], honest["failures"]
    assert honest["against_reference"]["cosine_min"] > 0.99999


def _strip_standard_metadata(content: bytes) -> bytes:
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    model.metadata = [entry for entry in model.metadata if entry.name.decode() != "TFLITE_METADATA"]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def test_int8_io_artifacts_are_not_given_to_mediapipe_and_say_why(tiny_21k, tmp_path):
    (result,) = export_all(tiny_21k, tmp_path, [("tflite", "int8")], int8_io="int8").values()
    mobile = result.verification["mobile_sdk"]
    assert "not int8" in mobile["skipped"] and "--int8-io uint8" in mobile["skipped"]


def test_a_uint8_input_is_pinned_to_raw_pixels(tiny_classifier, tmp_path):
    """A calibration range short of [0, 1] would give the uint8 input another scale; it is set to 1/255, and
    the QUANTIZE op after it keeps the function of the pixels the same."""
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.tools import flatbuffer_utils

    (result,) = export_all(tiny_classifier, tmp_path, [("tflite", "int8")], int8_io="uint8").values()
    model = flatbuffer_utils.read_model(str(result.artifact))
    graph = model.subgraphs[0]
    quantization = graph.tensors[graph.inputs[0]].quantization
    assert np.float32(quantization.scale[0]) == np.float32(1 / 255) and quantization.zeroPoint[0] == 0
    assert result.verification["mobile_sdk"]["passed"]  # raw pixels in, through MediaPipe
    quantization.scale = [0.5 / 255]  # what a calibration set without pure white would give
    off = tmp_path / "off.tflite"
    flatbuffer_utils.write_model(model, str(off))
    pinned = tmp_path / "pinned.tflite"
    pinned.write_bytes(pixel_input(off.read_bytes()))

    def run(path, pixels):
        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], pixels[None])
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    pixels = _pixels(64)[0]
    assert not np.array_equal(run(off, pixels), run(result.artifact, pixels))
    np.testing.assert_array_equal(run(pinned, pixels), run(result.artifact, pixels))


def test_minimum_parser_version_follows_the_schema_history():
    import flatbuffers
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    def version(**graph_members) -> str:
        metadata, graph = fb.ModelMetadataT(), fb.SubGraphMetadataT()
        tensor = fb.TensorMetadataT()
        for name, value in graph_members.items():
            setattr(graph if name != "associatedFiles" else tensor, name, value)
        graph.inputTensorMetadata = [tensor]
        metadata.subgraphMetadata = [graph]
        builder = flatbuffers.Builder(0)
        builder.Finish(metadata.Pack(builder), b"M001")
        return minimum_parser_version(bytes(builder.Output()))

    vocabulary = fb.AssociatedFileT()
    vocabulary.type = fb.AssociatedFileType.VOCABULARY
    versioned = fb.AssociatedFileT()
    versioned.version = "2"
    assert version() == "1.0.0"
    assert version(associatedFiles=[vocabulary]) == "1.0.1"
    assert version(inputProcessUnits=[]) == "1.1.0"
    assert version(outputTensorGroups=[]) == "1.2.0"
    assert version(associatedFiles=[versioned]) == "1.4.1"
    assert version(customMetadata=[]) == "1.5.0"
