"""TFLite files past the flatbuffer's 2 GiB limit keep their weights after it, at offsets (the buffer-offset layout),
with their TFLite Metadata laid out by hubedge (exporter/formats/tflite_offset.py).

A BiT R101x3 or R152x4 at fp32 takes that path by its size; here the threshold (``tflite_buffer_offset_above``) is
lowered to 0 so that a tiny twin takes it: the same code converts, lays out, verifies (LiteRT, and MediaPipe as a
phone app runs it), publishes and loads the file.
"""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest

from hubedge import runtimes
from hubedge.cli import main
from hubedge.runtimes.errors import CorruptModelError

pytestmark = pytest.mark.export


def _weights(content: bytes) -> list[tuple[int, int]]:
    """(offset, size) of each buffer the flatbuffer keeps outside itself."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(content, 0)
    return [(buffer.offset, buffer.size) for buffer in model.buffers if buffer.offset > 1 and buffer.size > 0]


def test_the_layout_keeps_the_converters_weights_byte_for_byte_after_a_larger_flatbuffer(tiny_classifier, tmp_path):
    """The writer against the converter's own buffer-offset file: every weight, in order, the same bytes at its new
    offset, which keeps its alignment; the metadata entries inline; the labels zipped after the weights."""
    import tensorflow as tf

    from hubedge.exporter.formats import tflite_offset
    from hubedge.exporter.formats.tflite import read_metadata
    from hubedge.exporter.formats.tflite_metadata import read_standard_metadata, with_standard_metadata

    module = tiny_classifier.export_module()
    size = tiny_classifier.info.input_size
    traced = tf.function(lambda images: module(images),
                         input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([traced.get_concrete_function()], module)
    converter._experimental_use_buffer_offset = True
    content = converter.convert()
    target = tmp_path / "tiny.tflite"
    tflite_offset.write_with_metadata(content, {"hubedge.test": b"{}"},
                                      lambda flat: with_standard_metadata(flat, tiny_classifier.info, "a test"),
                                      target)
    written = target.read_bytes()
    before, after = _weights(content), _weights(written)
    assert len(after) == len(before) > 10
    assert after[0][0] > before[0][0]  # the flatbuffer grew by the metadata
    for (old, length), (new, same) in zip(before, after):
        assert same == length and written[new:new + length] == content[old:old + length]
        assert (new - old) % tflite_offset.ALIGNMENT == 0 and new % 4 == 0  # the converter's alignment kept
    assert {"hubedge.test", "TFLITE_METADATA"} <= set(read_metadata(target))
    assert read_standard_metadata(written)["metadata"]["name"] == tiny_classifier.info.name
    labels_start = max(offset + length for offset, length in after)
    with zipfile.ZipFile(target) as packed:
        assert packed.namelist() == ["labels.txt", "labels_en.txt"]
        assert min(info.header_offset for info in packed.infolist()) >= labels_start  # after the weights


def test_a_tiny_twin_in_the_buffer_offset_layout_verifies_on_litert_and_mediapipe_and_loads(tiny_classifier,
                                                                                          tmp_path, photos):
    """fp32, fp16 and dynamic through the whole export: the layout, verification on the 132 images by LiteRT and by
    MediaPipe's ImageClassifier, the deployability report, publishing and the manifest; then loaded, run, and
    refused once a weight is tampered with."""
    from hubedge.exporter import ExportOptions, export
    from hubedge.exporter.formats.tflite import BUFFER_OFFSET_LAYOUT
    from hubedge.exporter.formats.tflite_offset import has_offset_buffers

    results = export(tiny_classifier, formats="tflite", precisions="fp32,fp16,dynamic", output=tmp_path,
                     options=ExportOptions(tflite_buffer_offset_above=0))
    assert len(results) == 3
    for result in results:
        content = result.artifact.read_bytes()
        assert has_offset_buffers(content), result.artifact.name
        verification = result.verification
        assert verification["passed"] and verification["mobile_sdk"]["passed"], verification["failures"]
        manifest = json.loads(result.artifact.with_suffix(".json").read_text())
        assert manifest["quantization"]["layout"] == BUFFER_OFFSET_LAYOUT
        assert manifest["artifact"]["size_bytes"] == len(content)
        deployability = manifest["deployability"]
        assert deployability["gpu_delegate"]["compatible"] and deployability["xnnpack"]["whole_graph"]
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".hubedge")]

    fp32 = results[0].artifact
    scores = runtimes.load(fp32).predict(photos[:2])
    assert scores.shape == (2, 1000) and np.isfinite(scores).all()
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in (fp32, fp32.with_suffix(".json")):
        shutil.copy(path, copy / path.name)
    tampered = copy / fp32.name
    content = bytearray(tampered.read_bytes())
    offset, length = _weights(bytes(content))[-1]
    content[offset + length // 2] ^= 0xFF
    tampered.write_bytes(bytes(content))
    with pytest.raises(CorruptModelError, match=f"{tampered.name} is not the file its manifest describes"):
        runtimes.load(tampered)


def test_a_feature_vector_in_the_buffer_offset_layout_verifies_on_mediapipes_image_embedder(tiny_features,
                                                                                          tmp_path):
    """A feature vector has no associated files, so nothing is zipped after its weights."""
    from hubedge.exporter import ExportOptions, export
    from hubedge.exporter.formats.tflite_offset import has_offset_buffers

    (result,) = export(tiny_features, formats="tflite", precisions="fp32", output=tmp_path,
                       options=ExportOptions(tflite_buffer_offset_above=0))
    content = result.artifact.read_bytes()
    assert has_offset_buffers(content) and not zipfile.is_zipfile(result.artifact)
    assert result.verification["passed"] and result.verification["mobile_sdk"]["task"] == "ImageEmbedder"
    assert result.verification["mobile_sdk"]["passed"]


def test_the_tflite_threshold_is_refused_where_no_format_takes_it_and_out_of_range(capsys, tmp_path):
    from hubedge.exporter.options import TFLITE_BUFFER_OFFSET_ABOVE, ExportOptions
    from hubedge.runtimes.errors import InvalidInputError

    code = main(["export", "--model", "bit-m-r50x1-in21k", "--weights", "seeded", "--format", "tflite",
                 "--quantize", "int8", "--tflite-buffer-offset-above", "0", "--output", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].endswith("(--tflite-buffer-offset-above) applies to tflite fp32, tflite fp16, "
                                          "tflite dynamic exports only; none was asked for")
    assert not any(tmp_path.iterdir())
    with pytest.raises(InvalidInputError, match="from 0 .* to 1879048192"):
        ExportOptions(tflite_buffer_offset_above=TFLITE_BUFFER_OFFSET_ABOVE + 1)
