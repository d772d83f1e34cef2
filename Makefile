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
	out=$$($(VENV)/bin/python -c "import exporter, runtimes, tensorflow_hub, onnxruntime, openvino, ai_edge_litert" 2>&1) \
		|| { echo "$$out"; exit 1; }
	touch $(STAMP)

DEMO_MODEL := bit-m-r50x1-in21k
YARDSTICK := efficientnet-lite0
DEMO_OUT := artifacts

demo: $(STAMP)
	for spec in "$(DEMO_MODEL) seeded" "$(YARDSTICK) package"; do set -- $$spec; \
		$(VENV)/bin/hubedge export --model $$1 --weights $$2 --output $(DEMO_OUT) \
			--format tflite --quantize none,fp16,dynamic,int8; \
		$(VENV)/bin/hubedge export --model $$1 --weights $$2 --output $(DEMO_OUT) \
			--format onnx,openvino --quantize none,fp16,int8; \
		$(VENV)/bin/hubedge export --model $$1 --weights $$2 --output $(DEMO_OUT) \
			--format openvino --quantize bf16 || echo "openvino bf16 not exported: see the line above"; \
	done
	$(VENV)/bin/hubedge bench $(DEMO_OUT)/{$(DEMO_MODEL),$(YARDSTICK)}.{tflite,onnx,openvino}.*.json --threads 2 \
		--json $(DEMO_OUT)/bench.json --markdown $(DEMO_OUT)/bench.md --plot $(DEMO_OUT)/bench.png
	$(VENV)/bin/hubedge predict --model $(DEMO_OUT)/$(DEMO_MODEL).tflite.int8.tflite \
		calibration_data/skimage-chelsea-cat.jpg
	$(VENV)/bin/hubedge predict --model $(DEMO_OUT)/$(YARDSTICK).tflite.int8.tflite \
		calibration_data/skimage-chelsea-cat.jpg calibration_data/skimage-coffee.jpg

test: $(STAMP)
	$(VENV)/bin/python -m pytest

clean:
	rm -rf artifacts .pytest_cache
