"""A step whose estimated peak cannot fit is refused in one line before it starts, never killed half-way."""

from __future__ import annotations

import pytest

from hubedge.exporter import memory_budget as memory
from hubedge.cli import main

GB = 10**9


def test_sizes_parse_in_decimal_and_binary_units_and_nonsense_is_refused():
    assert memory.parse_size("20GB") == 20 * GB and memory.parse_size("1.5G") == 1_500_000_000
    assert memory.parse_size("512MiB") == 512 * 2**20 and memory.parse_size("4096") == 4096
    with pytest.raises(ValueError, match="not a size"):
        memory.parse_size("lots")


def test_the_available_memory_is_the_kernels_or_the_cgroups_whichever_is_less(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   10000000 kB\n")
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    assert memory.available_bytes(meminfo, cgroup) == 10_000_000 * 1024  # no cgroup files: the kernel's figure
    (cgroup / "memory.max").write_text("max\n")
    assert memory.available_bytes(meminfo, cgroup) == 10_000_000 * 1024  # no limit set
    (cgroup / "memory.max").write_text(f"{4 * GB}\n")
    (cgroup / "memory.current").write_text(f"{1 * GB}\n")
    assert memory.available_bytes(meminfo, cgroup) == 3 * GB
    assert memory.total_bytes(meminfo, cgroup) == 4 * GB  # the limit, below MemTotal
    assert memory.available_bytes(tmp_path / "absent", tmp_path / "absent") is None


def test_the_flagship_is_estimated_from_its_architecture_and_refused_where_it_cannot_fit():
    size = memory.model_bytes("bit-m-r152x4-in21k")
    assert 4.42 * GB < size < 4.44 * GB  # 1107.3 M parameters, fp32
    onnx = memory.estimate("onnx", size)
    assert onnx.bytes == int(memory.BASE + memory.PER_MODEL_BYTE["onnx"] * size)
    fits = [memory.estimate(name, size) for name in ("onnx", "openvino", "savedmodel")]
    why = memory.refusal(onnx, 20 * GB, "bit-m-r152x4-in21k onnx fp32", fits)
    assert why.startswith("bit-m-r152x4-in21k onnx fp32 refused before it started: it needs about 72.4 GB")
    assert "the budget given is 20.0 GB; these fit: savedmodel" in why and "\n" not in why
    assert memory.refusal(onnx, 80 * GB, "onnx", fits) == ""
    assert memory.refusal(memory.estimate("onnx", 0), 1, "an unknown model") == ""  # no size: no judgement


def test_a_bits_graphs_written_from_its_weights_are_estimated_by_that_routes_own_ratios():
    from hubedge.exporter.options import ExportOptions
    from hubedge.exporter.sources import catalog

    size = memory.model_bytes("bit-m-r101x3-in21k")
    assert memory.estimate("openvino", size, written=True).ratio == memory.WRITTEN_OPENVINO
    for name in ("onnx", "ort", "qnn"):  # per precision; unnamed, the largest
        for precision, ratio in memory.WRITTEN_ONNX.items():
            written = memory.estimate(name, size, written=True, precision=precision)
            assert written.ratio == ratio and written.step == f"{name} {precision}"
        assert memory.estimate(name, size, written=True).ratio == max(memory.WRITTEN_ONNX.values())
    assert memory.estimate("onnx", size, written=True).bytes < memory.estimate("onnx", size).bytes
    # R101x3 (measured 17.6, 20.0 and 20.0 GB with the verification child) under a 22 GB budget: int8 alone is
    # refused, and the refusal names what fits
    fits = [memory.estimate("onnx", size, True, precision) for precision in ("fp32", "fp16", "int8")]
    assert [memory.refusal(estimate, 22 * GB, "r101x3", fits) == "" for estimate in fits] == [True, True, False]
    assert "these fit: onnx fp32, onnx fp16" in memory.refusal(fits[2], 22 * GB, "r101x3", fits)
    assert memory.estimate("tflite", size, written=True) == memory.estimate("tflite", size)  # converted anyway
    # tflite per precision: int8 was killed on R101x3 past 23.3 GB, and is refused under 24 GB now; fp32 starts
    tflite = [memory.estimate("tflite", size, precision=precision) for precision in ("fp32", "int8")]
    assert [memory.refusal(estimate, 24 * GB, "r101x3", tflite) == "" for estimate in tflite] == [True, False]
    bit, yardstick = catalog.get("bit-m-r101x3-in21k"), catalog.get("efficientnet-lite0")
    default, converter = ExportOptions(), ExportOptions(graph_writer="converter")
    assert memory.written_route(bit, None, default)  # a catalog BiT before its route is chosen
    assert not memory.written_route(bit, None, converter) and not memory.written_route(yardstick, None, default)
    assert not memory.written_route(bit, None, ExportOptions(graph="as-is"))
    assert memory.written_route(None, {"route": "re-authored", "edge_form": True}, default)  # once chosen: as it says
    assert not memory.written_route(bit, {"route": "as-is", "why": "not recognised"}, default)


def test_the_cli_refuses_to_build_a_twin_that_cannot_fit_before_anything_is_read(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["export", "--model", "bit-m-r152x4-in21k", "--weights", "seeded", "--format", "onnx",
                 "--memory-budget", "12GB", "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("hubedge: error: building the seeded twin of bit-m-r152x4-in21k refused before it "
                             "started: it needs about 17.9 GB"), err
    assert "the budget given is 12.0 GB; run it on a machine with 17.9 GB free" in err[0]
    assert not out.exists() or not list(out.iterdir())


def test_a_cli_run_refused_before_loading_still_clears_what_a_killed_run_left(tmp_path, capsys):
    import socket
    import subprocess
    import sys

    from hubedge.exporter.fsutil import TEMP_PREFIX

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{TEMP_PREFIX}{socket.gethostname()}-{ended.stdout.strip()}-x"  # a process now gone
    stale.mkdir()
    code = main(["export", "--model", "bit-m-r152x4-in21k", "--weights", "seeded", "--format", "onnx",
                 "--memory-budget", "12GB", "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and not stale.exists() and f"note: removed {stale.name}" in err, err


def test_the_cli_refuses_a_budget_that_is_not_a_size(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--model", "bit-m-r50x1", "--format", "onnx", "--memory-budget", "lots"])
    assert exit_info.value.code == 2 and "not a size" in capsys.readouterr().err


@pytest.mark.export
def test_a_step_that_cannot_fit_is_refused_and_the_others_are_written(tiny_classifier, tmp_path):
    """A budget between the SavedModel export's estimate and TFLite's: the first is written, the second refused in
    one line, and nothing of it is left in the output folder."""
    from hubedge.exporter.api import ExportsFailed, export

    size = memory.model_bytes(tiny_classifier)
    assert size > 0
    lines: list[str] = []
    with pytest.raises(ExportsFailed) as failed:
        export(tiny_classifier, formats="savedmodel,tflite", output=tmp_path, progress=lines.append,
               memory_budget=int(memory.BASE + 5 * size))
    assert [r.format for r in failed.value.results] == ["savedmodel"]
    (fmt, precision, error), = failed.value.failures
    assert (fmt, precision) == ("tflite", "fp32") and isinstance(error, memory.MemoryRefused)
    assert str(error).startswith("tiny-bit-ilsvrc tflite fp32 refused before it started: it needs about")
    assert "these fit: savedmodel" in str(error)
    assert f"hubedge: error: {error}" in lines
    assert not [p for p in tmp_path.iterdir() if "tflite" in p.name or p.name.startswith(".hubedge-")]


@pytest.mark.export
def test_when_no_step_fits_none_starts_and_no_reference_is_computed(tiny_classifier, tmp_path, monkeypatch):
    from hubedge.exporter.api import ExportsFailed, export

    monkeypatch.setattr(tiny_classifier, "reference", lambda: pytest.fail("the FP32 reference was computed"))
    size = memory.model_bytes(tiny_classifier)
    with pytest.raises(ExportsFailed) as failed:
        export(tiny_classifier, formats="savedmodel,tflite", output=tmp_path, memory_budget=int(memory.BASE + size))
    assert failed.value.results == [] and [f[:2] for f in failed.value.failures] == [("savedmodel", "fp32"),
                                                                                     ("tflite", "fp32")]
    assert all("run it on a machine with" in str(f[2]) for f in failed.value.failures)
    assert list(tmp_path.iterdir()) == []
