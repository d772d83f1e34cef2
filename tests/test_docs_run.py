"""Every ``hubedge`` command that README.md and docs/ show, run for real, in the order a reader meets them, on tiny
twins.

What a command names is replaced by a stand-in that needs no network and runs in seconds, and nothing else: a
catalog BiT or EfficientNet-Lite0, a SavedModel folder or a hub handle becomes the tiny classifier (``--weights``
and ``--twin-form`` go with them: the stand-in is a SavedModel), ``--twin-form published`` the tiny classifier in
the published graph form, an expert the tiny feature-vector twin (a catalog glob: both twins, so it is still a
catalog run on a local Ray instance), a BiT ``.npz`` checkpoint a tiny one, ``photo.jpg`` a bundled photo, and an
artifact path the artifact an earlier command shown wrote with the same format and precision. Every other flag is
kept; a gate command (``--baseline``) that writes no report gets ``--json``, to tell its timing verdict, noise beside
the other test worker, from any other failure. All commands run in one folder, so that ``artifacts/``, ``zoo/``
and the baselines one command writes are what the next one reads, as for a reader who follows the docs.

Two kinds are not run here, and are listed with why (``NOT_RUN``): commands for a Ray cluster at a made-up address
(``tests/test_zoo_cluster.py`` runs the same flags on a real two-node cluster), and ``make`` targets (``.ci/run``
runs ``make test``, which installs and prepares the arm64 environment; ``tests/test_demo.py`` covers the demo).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import time
from pathlib import Path

import pytest

from hubedge import calibration_data
from hubedge.cli import main
from hubedge.runtimes.devices import status
from hubedge.runtimes.manifest import read_manifest
from tests.conftest import block_network
from tests.test_docs import _commands

pytestmark = [pytest.mark.export, pytest.mark.ray]  # a catalog run shown starts a local Ray instance

# flags whose value (and the flag) are dropped with the model they qualify
MODEL_QUALIFIERS = ("--weights", "--twin-form")
# commands shown but not run here, by what they need, and where the same flags run instead
NOT_RUN = {
    "--cluster": "a Ray cluster at the address shown; tests/test_zoo_cluster.py runs --cluster on a real two-node one",
}


def _not_run(words: list[str]) -> str | None:
    return next((why for flag, why in NOT_RUN.items() if flag in words), None)


class StandIns:
    """The tiny stand-ins for what the docs name, and the folder the commands run in."""

    def __init__(self, folder: Path, classifier: Path, published: Path, features: Path, npz: Path) -> None:
        self.folder, self.classifier, self.published, self.features, self.npz = (
            folder, classifier, published, features, npz)
        self.photo = calibration_data.evaluation_photos()[0]

    def model(self, value: str, words: list[str]) -> str:
        if "," in value:
            return ",".join(self.model(part, words) for part in value.split(","))
        if value.startswith(("artifacts/", "ci/artifacts/")):
            return self.artifact(value)
        if value.endswith(".npz"):
            return str(self.npz)
        if "expert" in value:  # a glob over the experts stays a catalog run: two models
            return f"{self.features},{self.classifier}" if "*" in value else str(self.features)
        if "published" in words:
            return str(self.published)
        return str(self.classifier)

    def artifact(self, shown: str) -> str:
        """The artifact an earlier command wrote in the format and precision the shown name has
        (``<model>.<format>.<precision>.<ext>``)."""
        suffix = ".".join(Path(shown).name.split(".")[-3:])
        found = sorted((self.folder / "artifacts").glob(f"*.{suffix}"))
        assert found, f"the docs show {shown}, and no command shown before it writes a .{suffix} artifact"
        return str(found[0])

    def command(self, words: list[str]) -> list[str]:
        """``words`` as they run here."""
        out, skip = [], False
        for index, word in enumerate(words):
            if skip:
                skip = False
                continue
            if word in MODEL_QUALIFIERS:
                skip = True
                continue
            if index and words[index - 1] == "--model":
                out.append(self.model(word, words))
            elif word.endswith(".jpg"):
                out.append(str(self.photo))
            elif word == "ci/artifacts/":
                out.append("artifacts/")
            else:
                out.append(word)
        if "--calibration-data" in out:
            folder = self.folder / out[out.index("--calibration-data") + 1]
            folder.mkdir(parents=True, exist_ok=True)
            for photo in calibration_data.calibration_photos():
                shutil.copy(photo, folder / photo.name)
        if "--baseline" in out:  # the docs save base.json first; a CI's baseline is that file, committed
            baseline = self.folder / out[out.index("--baseline") + 1]
            if not baseline.exists():
                assert (self.folder / "base.json").exists(), "the docs use a baseline before any command saves one"
                baseline.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(self.folder / "base.json", baseline)
        return out


def _failed_on_timing_alone(run: dict) -> bool:
    """Whether a gate command failed only because rows timed slower than in the baseline saved minutes before.

    Beside the other test worker, that verdict on a tiny twin's sub-millisecond latencies is noise, not a defect;
    the gate's timing claims (a doctored baseline fails, a second bench raises no false alarm) are tested with
    nothing else running, in the timing tier (tests/test_bench.py). Any other failure still fails here: an agreement
    floor missed, a row that failed or went missing, a bad baseline."""
    if run["code"] != 1 or "gate_report" not in run:
        return False
    report = json.loads(run["gate_report"].read_text(encoding="utf-8"))
    regressions = report["gate"]["regressions"]
    return (bool(regressions) and all(" slower relative to " in message for message in regressions)
            and not any(row["status"] == "failed" and row["targeted"] for row in report["rows"]))


def _expected_to_refuse(words: list[str]) -> str | None:
    """The device a shown command must be refused for on this machine (asked for strictly, and absent here for the
    runtime of the artifact it runs), else None."""
    if "--strict-device" in words and "--device" in words and "--model" in words:
        device = words[words.index("--device") + 1]
        runtime = read_manifest(words[words.index("--model") + 1])["runtime"]
        return None if status(runtime, device).available else device
    return None


# slow (about 4 minutes alone, 5 in CI beside the other worker): 30 commands, a dozen of them exports, some to every
# format or as every emulated CPU class, because what the docs show is what must keep working
@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_classifier, tiny_published, tiny_features) -> list[dict]:
    """Every command shown, run once in document order (a command shown twice runs once)."""
    from hubedge.exporter.sources.bit import BitTwin
    from tests.helpers import tiny_spec

    folder = tmp_path_factory.mktemp("docs-run")
    npz = folder / "checkpoints" / "BiT-tiny.npz"
    npz.parent.mkdir()
    BitTwin(tiny_spec(num_outputs=1000).architecture, 1000).save_npz(npz)
    stand_ins = StandIns(folder, tiny_classifier.savedmodel_dir, tiny_published.savedmodel_dir,
                         tiny_features.savedmodel_dir, npz)
    done: dict[tuple[str, ...], dict] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        block_network(patch)
        for document, program, words in _commands():
            if program != "hubedge" or tuple(words) in done:
                continue
            run = {"document": document, "shown": words, "not_run": _not_run(words)}
            done[tuple(words)] = run
            if run["not_run"]:
                continue
            run["command"] = stand_ins.command(words)
            if "--baseline" in words and "--json" not in words:  # the verdict, to tell timing from other failures
                run["gate_report"] = folder / f"gate-{len(done)}.json"
                run["command"] += ["--json", str(run["gate_report"])]
            start = time.monotonic()
            with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
                run["code"] = main(run["command"])
            run["stdout"], run["stderr"] = out.getvalue(), err.getvalue()
            run["seconds"] = round(time.monotonic() - start, 1)
    return list(done.values())


def test_every_command_shown_runs_on_tiny_twins_or_is_refused_as_this_machine_must(runs):
    wrong = []
    for run in runs:
        if run["not_run"]:
            continue
        refuse = _expected_to_refuse(run["command"])
        said = f"{run['document']}: hubedge {' '.join(run['shown'])}\n  ran: {' '.join(run['command'])}"
        if refuse is None and _failed_on_timing_alone(run):
            print(f"{said}\n  its gate failed on timing alone, which beside another worker is noise; not counted")
        elif refuse is None and run["code"] != 0:
            wrong.append(f"{said}\n  exit {run['code']}: {run['stderr'].strip()[-1500:]}")
        elif refuse is not None and (run["code"] == 0 or refuse not in run["stderr"].splitlines()[-1]):
            wrong.append(f"{said}\n  must be refused in one line naming {refuse}; exit {run['code']}: "
                         f"{run['stderr'].strip()[-500:]}")
    slowest = sorted((run for run in runs if "seconds" in run), key=lambda run: -run["seconds"])[:5]
    print("slowest:", *(f"{run['seconds']} s: hubedge {' '.join(run['command'])}" for run in slowest), sep="\n  ")
    assert not wrong, "\n".join(wrong)


def test_the_commands_not_run_here_are_only_those_named_with_why(runs):
    not_run = [run for run in runs if run["not_run"]]
    assert len(not_run) < len(runs) / 10, [run["shown"] for run in not_run]
    assert all(_not_run(run["shown"]) in NOT_RUN.values() for run in not_run)
    ran = [run for run in runs if not run["not_run"]]
    assert sum(run["shown"][0] == "export" for run in ran) >= 10 and {"predict", "bench", "report", "models",
                                                                       "devices"} <= {run["shown"][0] for run in ran}
