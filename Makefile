# The two commands of the README. Both create (or reuse) .venv/ at the repo root first.
#   make demo   install, then the main job: export the seeded BiT-M R50x1 ImageNet-21k twin and the trained
#               EfficientNet-Lite0 yardstick to every CPU format and precision (each verified against its FP32
#               reference), bench them all beside their TF references, and predict photos with int8 artifacts
#   make test   install, then the whole test suite (fast unit tests and the slow full-geometry ones)
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.hubedge-installed
# This machine's pip configuration names two empty local indexes; their warnings are noise, not errors.
QUIET_PIP := { grep -v "^WARNING: Location 'file:" || true; }

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip 2>&1 | $(QUIET_PIP)
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]' 2>&1 | $(QUIET_PIP)
	out=$$($(VENV)/bin/python -c "import exporter, runtimes, tensorflow_hub, onnxruntime, openvino, ai_edge_litert, \
		mediapipe.tasks.python.vision; from exporter.formats.tflite_metadata import metadata_writers; metadata_writers()" 2>&1) \
		|| { echo "$$out"; exit 1; }
	touch $(STAMP)

DEMO_OUT := artifacts

# hubedge/demo.py: a failed export does not stop it; it benches and predicts with the rest, then exits non-zero
demo: $(STAMP)
	$(VENV)/bin/python -m hubedge.demo --output $(DEMO_OUT)

# First the tests a runtimes-only install can run, with the export extra made unimportable, then everything. The
# fuzz suite runs in a process of its own: after the full-geometry tests the main process holds many GB, and a
# fuzz case that allocates on top of that must not take the whole run down with it.
test: $(STAMP)
	HUBEDGE_TEST_WITHOUT_EXPORT=1 $(VENV)/bin/python -m pytest -m "not export" -q -p no:cacheprovider
	$(VENV)/bin/python -m pytest --ignore=tests/test_fuzz_readers.py --durations=25
	$(VENV)/bin/python -m pytest tests/test_fuzz_readers.py

clean:
	rm -rf artifacts .pytest_cache
