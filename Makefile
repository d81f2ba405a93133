# All set-up is `make setup` (idempotent); `make demo` and `make test` run it first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-done
NETNS  := tools/netns-run

.PHONY: setup demo test lint format bench clean model

setup: $(STAMP)

# torch==2.13.0 goes in first and by exact version: a bare `torch` requirement on a machine without
# CUDA would pull several GB of CUDA wheels. With CUDA present the GPU build of ONNX Runtime is used.
$(STAMP): setup.py Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q torch==2.13.0
	if nvidia-smi -L >/dev/null 2>&1; then ort=gpu; else ort=cpu; fi; \
	  $(BIN)/python -m pip install -q -e ".[ros,sim,dev,$$ort]"
	command -v ip >/dev/null || apt-get install -y -q iproute2
	# Headless MuJoCo rendering: EGL where libEGL exists, else the OSMesa software fallback
	# (structalign_ros/core/sim picks the same way).
	ldconfig -p | grep -q 'libEGL\.so' || apt-get install -y -q libosmesa6
	touch $(STAMP)

demo: setup
	$(NETNS) $(BIN)/structalign demo

# Every test runs inside a private network namespace: the ROS 2 tests start real DDS participants,
# and their traffic must never leave this machine.
test: setup
	$(BIN)/ruff check .
	$(NETNS) $(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The default model shipped in models/ (see models/README.md): record simulated episodes, train with
# the default recipe (no flags: 101-105 train, 106 validates and calibrates), copy the delivered
# checkpoint and its ONNX export to models/, and evaluate beside the baselines on episode 107, which
# the training never saw (baselines fitted on the same six training episodes).
MODEL_DIR   := build/sim_default
MODEL_SEEDS := 101 102 103 104 105 106
model: setup
	rm -rf $(MODEL_DIR) && mkdir -p $(MODEL_DIR)
	for s in $(MODEL_SEEDS); do $(BIN)/structalign sim --seconds 40 --seed $$s --out $(MODEL_DIR)/ep$$s || exit 1; done
	$(BIN)/structalign sim --seconds 30 --seed 107 --out $(MODEL_DIR)/ep107
	$(BIN)/structalign train --bags $(MODEL_SEEDS:%=$(MODEL_DIR)/ep%) --out $(MODEL_DIR)/run
	install -m 644 $(MODEL_DIR)/run/model.pt models/sim_default.pt
	install -m 644 $(MODEL_DIR)/run/model.onnx models/sim_default.onnx
	$(BIN)/python tools/golden.py --model models/sim_default.pt --bag $(MODEL_DIR)/ep107 --out models/sim_default.golden.npz
	$(BIN)/structalign eval --bags $(MODEL_DIR)/ep107 --train-bags $(MODEL_SEEDS:%=$(MODEL_DIR)/ep%) \
	  --model models/sim_default.pt --out $(MODEL_DIR)/eval

clean:
	rm -rf build install log .pytest_cache .ruff_cache *.egg-info
