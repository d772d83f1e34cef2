"""The FP32 reference recorded at export (runtimes.reference): the file every manifest names, checked before use."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from hubedge.exporter.pipeline import evaluation_set
from hubedge.runtimes.errors import CorruptModelError, HubedgeError
from hubedge.runtimes.manifest import read_manifest
from hubedge.runtimes.reference import batch_sha256, read_recorded


def test_every_artifact_names_one_recorded_reference_of_its_model(tiny_exports, tiny_classifier):
    names = {read_manifest(r.artifact)["reference"]["file"] for r in tiny_exports.values()}
    assert len(names) == 1  # one file per model and weights, shared by all its artifacts
    artifact = tiny_exports[("tflite", "int8")].artifact
    manifest = read_manifest(artifact)
    recorded = read_recorded(manifest, artifact.parent)
    images = evaluation_set(64)
    np.testing.assert_array_equal(recorded.outputs, tiny_classifier.reference().predict(images.images))
    assert recorded.input_sha256 == batch_sha256(images.images) == manifest["reference"]["input_sha256"]
    assert manifest["reference"]["photos"] and recorded.outputs.dtype == np.float32


def test_recorded_references_are_byte_stable_across_exports(tiny_classifier, tmp_path):
    from hubedge.cli import main

    contents = []
    for run in ("a", "b"):
        assert main(["export", "--model", str(tiny_classifier.savedmodel_dir), "--format", "tflite",
                     "--output", str(tmp_path / run)]) == 0
        contents.append(next((tmp_path / run).glob("*.reference.npy")).read_bytes())
    assert contents[0] == contents[1]


def test_a_damaged_or_foreign_reference_is_refused_in_one_line(tiny_exports, tmp_path):
    artifact = tiny_exports[("onnx", "fp32")].artifact
    manifest = read_manifest(artifact)
    copy = tmp_path / manifest["reference"]["file"]
    shutil.copy(artifact.parent / manifest["reference"]["file"], copy)
    read_recorded(manifest, tmp_path)  # the intact copy is accepted
    data = np.load(copy)
    data[0, 0] += 1.0
    np.save(copy, data)
    with pytest.raises(CorruptModelError, match="sha256 mismatch") as damaged:
        read_recorded(manifest, tmp_path)
    assert "\n" not in str(damaged.value)
    np.save(copy, np.zeros((9, 1024), np.float32))  # another model's outputs, under this manifest's sha256
    foreign = json.loads(json.dumps(manifest))
    foreign["reference"]["sha256"] = hashlib.sha256(copy.read_bytes()).hexdigest()
    with pytest.raises(CorruptModelError, match=r"not 132 x 1000"):
        read_recorded(foreign, tmp_path)
    copy.unlink()
    with pytest.raises(CorruptModelError, match="is missing; copy it with the artifact"):
        read_recorded(manifest, tmp_path)
    with pytest.raises(CorruptModelError, match="has no recorded reference"):
        read_recorded({**manifest, "reference": {}}, tmp_path)


def test_the_exact_input_batch_is_recorded_too(tiny_exports):
    from hubedge.runtimes.reference import read_recorded_inputs

    artifact = tiny_exports[("tflite", "fp32")].artifact
    recorded = read_recorded_inputs(read_manifest(artifact), artifact.parent)
    np.testing.assert_array_equal(recorded, evaluation_set(64).images)


def test_a_machine_that_preprocesses_otherwise_is_judged_on_the_recorded_batch(tiny_exports, tmp_path, monkeypatch):
    """Another Pillow would give other pixels: bench says so and uses the batch recorded at export."""
    import dataclasses

    from hubedge.benchmarks import runner
    from hubedge.exporter import pipeline

    artifacts = [str(tiny_exports[("tflite", p)].artifact) for p in ("fp32", "int8")]
    options = runner.BenchOptions(runs=2, warmup=1, threads=1, paired_blocks=1, paired_calls=1,
                                 reference_mode="recorded")
    same = runner.run(artifacts, options, progress=lambda _: None)
    real = pipeline.evaluation_set
    monkeypatch.setattr(pipeline, "evaluation_set", lambda size: dataclasses.replace(
        real(size), images=np.clip(real(size).images + 1.0 / 255, 0.0, 1.0)))
    said: list[str] = []
    other = runner.run(artifacts, options, progress=said.append)
    assert any("differs from export's: judged on the recorded input batch" in line for line in said)
    for before, after in zip(same["rows"], other["rows"]):
        assert before["agreement"] == after["agreement"]
    folder = tmp_path / "no-inputs"
    folder.mkdir()
    for path in artifacts:
        manifest = read_manifest(path)
        shutil.copy(path, folder)
        shutil.copy(path.rsplit(".", 1)[0] + ".json", folder)
        shutil.copy(tiny_exports[("tflite", "fp32")].artifact.parent / manifest["reference"]["file"], folder)
    with pytest.raises(HubedgeError, match="differs from export.s .*no recorded input batch"):
        runner.run([str(folder)], options, progress=lambda _: None)
