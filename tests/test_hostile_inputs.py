"""Hostile and odd inputs, one by one: decompression bombs, deep and odd image modes, native chatter on stdout,
swapped artifacts, and manifests that name files outside their folder. Each is one clear line, never a traceback
and never a confident answer on wrong pixels."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hubedge import runtimes
from hubedge.cli import main
from hubedge.runtimes.errors import CorruptModelError, InvalidInputError
from hubedge.runtimes.preprocess import ALPHA_BACKGROUND, DEFAULT_MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS_ENV, load_image

REPO = Path(__file__).resolve().parents[1]


def png_claiming(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header declares ``width`` × ``height`` RGB pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + \
        chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_from_its_header_in_one_line(tmp_path, capsys):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(40000, 40000))  # 1.6 gigapixels in 67 bytes: over Pillow's own error limit
    assert bomb.stat().st_size < 200
    with pytest.raises(InvalidInputError, match=r"declares 40000x40000 = 1,600,000,000 pixels, over the limit"):
        load_image(bomb)
    code = main(["predict", "--model", "artifacts/none.tflite", str(bomb)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("hubedge: error:") and "--max-image-pixels" in err[0]


def test_the_pixel_limit_is_hubedges_own_and_users_can_set_it(tmp_path, monkeypatch):
    """Between Pillow's warning and error limits (89 and 179 megapixels) Pillow would warn and decode; hubedge's
    limit decides alone, from the header, whichever side of Pillow's limits an image falls."""
    between = tmp_path / "between.png"
    between.write_bytes(png_claiming(12000, 10001))  # 120,012,000 pixels: just over hubedge's default
    with pytest.raises(InvalidInputError, match="over the limit of 120,000,000"):
        load_image(between)
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30), (10, 20, 30)).save(small)
    with pytest.raises(InvalidInputError, match="1,200 pixels, over the limit of 1,000"):
        load_image(small, max_pixels=1000)
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "1199")
    with pytest.raises(InvalidInputError, match="over the limit of 1,199"):
        load_image(small)
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "1200")
    assert load_image(small).size == (40, 30)
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "lots")
    with pytest.raises(InvalidInputError, match=f"{MAX_IMAGE_PIXELS_ENV} must be a positive whole number"):
        load_image(small)
    monkeypatch.delenv(MAX_IMAGE_PIXELS_ENV)
    assert DEFAULT_MAX_IMAGE_PIXELS == 120_000_000 and load_image(small).size == (40, 30)


def test_the_cli_flag_sets_the_limit_for_the_command_only(tmp_path, capsys):
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30)).save(small)
    code = main(["predict", "--model", "artifacts/none.tflite", "--max-image-pixels", "1000", str(small)])
    assert code == 2 and "over the limit of 1,000" in capsys.readouterr().err
    assert MAX_IMAGE_PIXELS_ENV not in os.environ


@pytest.mark.parametrize("mode, dtype, peak", [("I;16", np.uint16, 65535), ("I", np.int32, 65535),
                                               ("F", np.float32, 1.0)])
def test_deep_images_are_scaled_to_8_bits_not_clipped(tmp_path, mode, dtype, peak):
    """A 16-bit ramp used to become nearly white (convert("RGB") clips everything above 255)."""
    ramp = np.linspace(0, peak, 64 * 64, dtype=np.float64).reshape(64, 64).astype(dtype)
    path = tmp_path / ("ramp.png" if mode == "I;16" else "ramp.tif")
    Image.fromarray(ramp, mode=mode if mode != "I;16" else None).save(path)
    assert Image.open(path).mode == mode
    pixels = np.asarray(load_image(path))
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    expected = np.rint(ramp.astype(np.float64) / peak * 255)
    assert np.abs(pixels[..., 0].astype(int) - expected).max() <= 1
    assert abs(pixels.mean() - 127.5) < 1.0 and (pixels[..., 0] == pixels[..., 2]).all()


@pytest.mark.parametrize("mode, values, why", [
    ("I", np.array([[-5, 70000]], np.int32), r"32-bit integer pixels in \[-5, 70000\]"),
    ("F", np.array([[0.0, 4.5]], np.float32), r"floating-point pixels in \[0, 4.5\]"),
    ("F", np.array([[0.0, np.nan]], np.float32), r"floating-point pixels in \[.*nan"),
])
def test_deep_images_of_unknown_range_are_refused_saying_why(tmp_path, mode, values, why):
    path = tmp_path / "odd.tif"
    Image.fromarray(values, mode=mode).save(path)
    with pytest.raises(InvalidInputError, match=why):
        load_image(path)


def test_alpha_is_composited_on_white_and_an_animation_gives_its_first_frame(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200  # red under the alpha
    rgba[:, :4, 3] = 0  # left half transparent
    rgba[:, 4:, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "cutout.png")
    pixels = np.asarray(load_image(tmp_path / "cutout.png"))
    assert tuple(pixels[0, 0]) == ALPHA_BACKGROUND == (255, 255, 255) and tuple(pixels[0, 7]) == (200, 0, 0)
    grey_alpha = Image.fromarray(np.stack([np.full((4, 4), 50, np.uint8), np.full((4, 4), 128, np.uint8)], -1),
                                 mode="LA")
    grey_alpha.save(tmp_path / "la.png")
    assert tuple(np.asarray(load_image(tmp_path / "la.png"))[0, 0]) == (152, 152, 152)  # 50·128/255 + 255·127/255
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.info["transparency"] = 1
    palette.save(tmp_path / "palette.png", transparency=1)
    assert tuple(np.asarray(load_image(tmp_path / "palette.png"))[0, 0]) == (255, 255, 255)
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(tmp_path / "anim.gif").n_frames == 3
    assert tuple(np.asarray(load_image(tmp_path / "anim.gif"))[0, 0]) == (255, 0, 0)
    Image.new("CMYK", (4, 4), (0, 255, 0, 0)).save(tmp_path / "cmyk.jpg")
    assert np.abs(np.asarray(load_image(tmp_path / "cmyk.jpg"))[0, 0].astype(int) - (255, 0, 255)).max() <= 2
    grey = Image.new("L", (4, 4), 77)
    assert tuple(np.asarray(runtimes.preprocess(grey, 4))[0, 0, 0] * 255) == (77, 77, 77)


def test_native_output_on_file_descriptor_1_goes_to_stderr_and_json_stays_clean():
    """The QNN SDK prints a LIBNATIVE note on descriptor 1, past Python; a fake command does the same here."""
    code = (
        "import os, sys\n"
        "import hubedge.cli.devices as devices\n"
        "real = devices.run\n"
        "def chatty(args):\n"
        "    os.write(1, b' # LIBNATIVE: native chatter\\n')\n"
        "    return real(args)\n"
        "devices.run = chatty\n"
        "from hubedge.cli import main\n"
        "sys.exit(main(['devices', '--json']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0 and "LIBNATIVE" in result.stderr and "LIBNATIVE" not in result.stdout
    assert {row["runtime"] for row in json.loads(result.stdout)} >= {"litert", "onnxruntime", "openvino"}


PREDICTED = [("tflite", "int8"), ("onnx", "int8"), ("openvino", "int8"), ("savedmodel", "fp32")]


@pytest.mark.parametrize("name, precision", PREDICTED)
def test_predict_json_is_clean_json_on_every_runtime(tiny_exports, photos, name, precision):
    artifact = tiny_exports[(name, precision)].artifact
    result = subprocess.run([sys.executable, "-m", "hubedge", "predict", "--json", "--model", str(artifact),
                             str(photos[0]), str(photos[1])], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    records = json.loads(result.stdout)
    assert [len(r["top_k"]) for r in records] == [5, 5] and "Traceback" not in result.stderr


def test_predict_json_is_clean_json_on_the_npu_path(tiny_exports, photos):
    from hubedge.runtimes.devices import status

    if not status("onnxruntime", "npu").available:
        pytest.skip(f"no NPU path here: {status('onnxruntime', 'npu').reason}")
    artifact = tiny_exports[("qnn", "int8")].artifact
    result = subprocess.run([sys.executable, "-m", "hubedge", "predict", "--json", "--device", "npu", "--model",
                             str(artifact), str(photos[0])], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(json.loads(result.stdout)[0]["top_k"]) == 5


def _copy_pair(source: Path, folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    for path in (source, source.with_suffix(".json"), source.with_suffix(".bin")):
        if path.exists():
            shutil.copy(path, folder / path.name)
    return folder / source.name


def test_a_swapped_artifact_is_refused_before_any_runtime_reads_it(tiny_exports, tmp_path, photos, capsys):
    fp32, int8 = (tiny_exports[("tflite", p)].artifact for p in ("fp32", "int8"))
    swapped = _copy_pair(fp32, tmp_path / "swapped")
    shutil.copy(int8, swapped)  # a valid .tflite, but not the one this manifest was verified with
    with pytest.raises(CorruptModelError, match="is not the file its manifest describes"):
        runtimes.load(swapped)
    code = main(["predict", "--model", str(swapped), str(photos[0])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("hubedge: error:") and "changed or swapped after export" in err[-1]
    openvino = _copy_pair(tiny_exports[("openvino", "fp32")].artifact, tmp_path / "openvino")
    weights = openvino.with_suffix(".bin")
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CorruptModelError, match=r"\.bin is not the file its manifest describes"):
        runtimes.load(openvino)


def _rewrite_manifest(artifact: Path, change) -> None:
    path = artifact.with_suffix(".json")
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_a_manifest_may_name_only_files_beside_it(tiny_exports, tmp_path):
    from hubedge.runtimes.reference import read_recorded

    artifact = _copy_pair(tiny_exports[("onnx", "fp32")].artifact, tmp_path / "pair")
    outside = tmp_path / "secret.npy"
    np.save(outside, np.zeros((9, 1000), np.float32))
    for name in ("../secret.npy", "../../etc/passwd", "/etc/passwd", "sub/x.npy", "..", ""):
        _rewrite_manifest(artifact, lambda m, n=name: m["reference"].update(file=n))
        with pytest.raises(CorruptModelError, match="a manifest may only name files beside it"):
            read_recorded(runtimes.read_manifest(artifact), artifact.parent)
    (artifact.parent / "link.npy").symlink_to(outside)
    _rewrite_manifest(artifact, lambda m: m["reference"].update(file="link.npy"))
    with pytest.raises(CorruptModelError, match="leads out of"):
        read_recorded(runtimes.read_manifest(artifact), artifact.parent)
    openvino = _copy_pair(tiny_exports[("openvino", "fp32")].artifact, tmp_path / "ov")
    _rewrite_manifest(openvino, lambda m: m["artifact"].update(companions={"../../etc/passwd": "0" * 64}))
    with pytest.raises(CorruptModelError, match="records no sha256 for tiny-bit-ilsvrc.openvino.fp32.bin"):
        runtimes.load(openvino)


def test_a_recorded_reference_with_nan_is_refused(tiny_exports, tmp_path):
    from hubedge.runtimes.reference import read_recorded

    artifact = _copy_pair(tiny_exports[("onnx", "fp32")].artifact, tmp_path / "pair")
    manifest = runtimes.read_manifest(artifact)
    reference = tiny_exports[("onnx", "fp32")].artifact.parent / manifest["reference"]["file"]
    outputs = np.load(reference)
    outputs[3, 7] = np.nan
    np.save(artifact.parent / reference.name, outputs)
    digest = hashlib.sha256((artifact.parent / reference.name).read_bytes()).hexdigest()
    _rewrite_manifest(artifact, lambda m: m["reference"].update(sha256=digest))
    with pytest.raises(CorruptModelError, match="NaN or infinite outputs"):
        read_recorded(runtimes.read_manifest(artifact), artifact.parent)


def test_a_hostile_artifact_with_a_matching_manifest_is_one_line_from_predict(tiny_exports, tmp_path, photos):
    """Whoever writes the artifact can write its manifest: the sha256 then matches, and the runtime parses the
    file. ``hubedge predict`` runs it in a child, so even a runtime that aborts is one line."""
    artifact = _copy_pair(tiny_exports[("tflite", "int8")].artifact, tmp_path / "hostile")
    data = bytearray(artifact.read_bytes())
    data[4:8] = b"XXXX"  # the flatbuffer's file identifier
    artifact.write_bytes(bytes(data))
    _rewrite_manifest(artifact, lambda m: m["artifact"].update(sha256=hashlib.sha256(bytes(data)).hexdigest()))
    result = subprocess.run([sys.executable, "-m", "hubedge", "predict", "--model", str(artifact), str(photos[0])],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and lines[0].startswith("hubedge: error:"), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_runtime_that_aborts_in_predict_is_one_line(tiny_exports, photos, monkeypatch, capsys):
    from hubedge.runtimes import isolated

    monkeypatch.setattr(isolated, "child_command",
                        lambda *args, **kwargs: [sys.executable, "-c", "import os; print('F0000 boom'); os.abort()"])
    code = main(["predict", "--model", str(tiny_exports[("tflite", "fp32")].artifact), str(photos[0])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "killed by SIGABRT" in err[0] and "F0000 boom" in err[0]


def test_bench_refuses_a_manifest_that_names_a_file_outside_its_folder(tiny_exports, tmp_path):
    from hubedge.benchmarks.runner import find_artifacts

    artifact = _copy_pair(tiny_exports[("tflite", "fp32")].artifact, tmp_path / "pair")
    _rewrite_manifest(artifact, lambda m: m["artifact"].update(file="../../etc/passwd"))
    with pytest.raises(CorruptModelError, match="a manifest may only name files beside it"):
        find_artifacts([str(artifact.parent)])
    _rewrite_manifest(artifact, lambda m: m["artifact"].update(file="/etc/passwd"))
    with pytest.raises(CorruptModelError, match="a manifest may only name files beside it"):
        find_artifacts([str(artifact.with_suffix(".json"))])
