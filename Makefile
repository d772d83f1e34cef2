# The two commands of the README. Both create (or reuse) .venv/ at the repo root first.
#   make demo   install, then the main job: export the seeded BiT-M R50x1 ImageNet-21k twin to TFLite fp32 and
#               int8 (each verified against the FP32 reference) and predict a photo with the int8 artifact
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
	out=$$($(VENV)/bin/python -c "import exporter, runtimes, tensorflow_hub, onnxruntime, openvino, ai_edge_litert" 2>&1) \
		|| { echo "$$out"; exit 1; }
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hubedge export --model bit-m-r50x1-in21k --weights seeded --format tflite --quantize none,int8 \
		--output artifacts
	$(VENV)/bin/hubedge predict --model artifacts/bit-m-r50x1-in21k.tflite.int8.tflite \
		calibration_data/skimage-chelsea-cat.jpg

test: $(STAMP)
	$(VENV)/bin/python -m pytest

clean:
	rm -rf artifacts .pytest_cache
