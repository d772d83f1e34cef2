# The two commands of the README. Both create (or reuse) .venv/ at the repo root first.
#   make demo   install, then the main job: export the seeded BiT-M R50x1 ImageNet-21k twin and the trained
#               EfficientNet-Lite0 yardstick to every CPU format and precision (each verified against its FP32
#               reference; one catalog run on a local Ray instance, so a second make demo skips what is up to date),
#               bench them all beside their TF references, predict photos with int8 artifacts, write the report
#   make test   install, then the whole test suite (fast unit tests and the slow full-geometry ones)
#   make check  install, then the inner loop: unit tests and one tiny export per format (under 3 minutes)
#   make arm64-env  prepare (once; cached) the aarch64 Python that verifies artifacts as arm64 CPUs under qemu-aarch64
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.hubedge-installed
# This machine's pip configuration names two empty local indexes; their warnings are noise, not errors.
# setuptools' editable install ends with a notice that a folder named like the package in the working directory may be
# imported instead; hubedge's checkout is that folder (hubedge/ imports the libraries beside it), so it is silenced.
QUIET_PIP := { grep -v "^WARNING: Location 'file:" || true; }

.PHONY: install demo test check clean arm64-env

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip 2>&1 | $(QUIET_PIP)
	PYTHONWARNINGS='ignore:Editable installation' $(VENV)/bin/python -m pip install --quiet -e '.[dev]' 2>&1 | $(QUIET_PIP)
	out=$$($(VENV)/bin/python -c "import hubedge.exporter, hubedge.runtimes, tensorflow_hub, onnxruntime, openvino, ai_edge_litert, \
		mediapipe.tasks.python.vision; from hubedge.exporter.formats.tflite_metadata import metadata_writers; metadata_writers()" 2>&1) \
		|| { echo "$$out"; exit 1; }
	touch $(STAMP)

# Debian's arm64 interpreter and PyPI's aarch64 wheels of the runtimes installed here, under ~/.cache/hubedge/arm64
# ($$HUBEDGE_ARM64_ROOT); a second run finds it ready (exporter/verify/arm64_env.py; called, not run with -m,
# which would import the module twice: the exporter package imports it too)
arm64-env: $(STAMP)
	$(VENV)/bin/python -c "import sys; from hubedge.exporter.verify.arm64_env import main; sys.exit(main())"

DEMO_OUT := artifacts

# hubedge/demo.py: a failed export does not stop it; it benches and predicts with the rest, then exits non-zero
demo: $(STAMP)
	$(VENV)/bin/python -m hubedge.demo --output $(DEMO_OUT)

# First the tests a runtimes-only install can run, with the export extra made unimportable, then everything on two
# pytest-xdist workers (tests/conftest.py hands out whole modules, longest first; benchmarks/records/test-timing.md
# shows that two fit in 24 GB). The fuzz suite runs in processes of its own: a fuzz case that allocates on top of what
# a worker holds after the full-geometry tests must not take the whole run down with it. Tests marked timing (the
# gate's check that a second bench raises no false alarm) run alone, before the rest: a second worker's load changes
# the latency of a multi-threaded runtime unlike its reference's, which is noise the gate does not claim to cancel
# (docs/benchmarks.md, "CI gate"). tests/tiers.sh ends with each tier's time.
PYTEST := $(VENV)/bin/python -m pytest
TEST_WORKERS ?= 2
PARALLEL := -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

# make test first prepares the aarch64 Python of make arm64-env (cached; about 20 s the first time) so that the
# arm64 tests run; where it cannot be made (no apt, no network to Debian), it says so and those tests skip, naming
# the command, unless HUBEDGE_REQUIRE_CPU_EMULATION=1 (set by .ci/run) makes them fail.
test: $(STAMP)
	$(VENV)/bin/python -c "import sys; from hubedge.exporter.verify.arm64_env import main; sys.exit(main())" \
		|| echo "make test: the arm64 environment could not be prepared; the arm64 tests will say why"
	bash tests/tiers.sh \
		runtimes-only 'HUBEDGE_TEST_WITHOUT_EXPORT=1 $(PYTEST) -m "not export" -q -p no:cacheprovider' \
		timing '$(PYTEST) -m timing -q -p no:cacheprovider' \
		main '$(PYTEST) -m "not timing" --ignore=tests/test_fuzz_readers.py $(PARALLEL) --durations=25' \
		fuzz '$(PYTEST) tests/test_fuzz_readers.py -n $(TEST_WORKERS)'

# The inner loop (tests marked check in tests/conftest.py: every unit test, one tiny export per format, the CLI's and
# the API's refusals), under 3 minutes on 2 cores: run it before each commit; make test before a push.
check: $(STAMP)
	bash tests/tiers.sh inner-loop '$(PYTEST) -m check $(PARALLEL) -q --durations=10'

clean:
	rm -rf artifacts .pytest_cache
