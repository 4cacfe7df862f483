# Two commands set up a fresh machine on their own:
#   make demo   - the main job (runs `make setup` first)
#   make test   - the test suite (runs `make setup` and, where it can, `make setup-detectron2`)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.setup-done
MAX_JOBS ?= 2

.PHONY: setup setup-detectron2 try-setup-detectron2 test demo lint lint-check benchmark clean-venv

setup: $(STAMP)

# Re-runs only when the pins or the package metadata change; otherwise `make setup` is a no-op.
$(STAMP): requirements/build.txt requirements/torch.txt requirements/mmcv.txt setup.py pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -r requirements/build.txt
	$(PIP) install -q -r requirements/torch.txt
	@# Source build with compiled ops (~11 min on 2 cores the first time; pip caches the wheel).
	MAX_JOBS=$(MAX_JOBS) $(PIP) install -q --no-build-isolation -r requirements/mmcv.txt
	$(PIP) install -q --no-build-isolation -e ".[mmseg,dev,export]" -c requirements/torch.txt
	$(PY) -c "import torch, torchvision, mmcv.ops, mmseg.models, timm, anyup_plugin; print('environment ready: torch', torch.__version__, 'mmcv', mmcv.__version__, 'timm', timm.__version__)"
	@touch $(STAMP)

# Detectron2 is not on PyPI: install it from $(DETECTRON2_WHEEL) (default: the prebuilt wheel in
# ../shared/wheels beside the checkout, or in this project's machines' /work/shared/wheels, for a
# clone made elsewhere), else from its upstream source. Does nothing once it imports.
DETECTRON2_WHEEL ?= $(firstword $(wildcard ../shared/wheels/detectron2-*.whl /work/shared/wheels/detectron2-*.whl))
DETECTRON2_SOURCE := git+https://github.com/facebookresearch/detectron2.git

setup-detectron2: setup
	@if $(PY) -c "import detectron2" 2>/dev/null; then \
		echo "detectron2 already installed"; \
	elif [ -n "$(DETECTRON2_WHEEL)" ]; then \
		$(PIP) install -q "$(DETECTRON2_WHEEL)" -c requirements/torch.txt; \
	else \
		MAX_JOBS=$(MAX_JOBS) $(PIP) install -q --no-build-isolation "$(DETECTRON2_SOURCE)" \
			-c requirements/torch.txt; \
	fi
	$(PY) -c "import detectron2; print('detectron2', detectron2.__version__)"

# What `make test` runs: Detectron2 is one of the project's two frameworks, so its tests should
# run; when it cannot be installed here (no wheel, no network), the suite still runs and the
# Detectron2 tests are skipped, each saying why.
try-setup-detectron2: setup
	@$(MAKE) --no-print-directory setup-detectron2 \
		|| echo "detectron2 could not be installed: tests/test_detectron2 will be skipped"

# Detectron2 where it can be installed, lint and format checks (config in pyproject.toml), then
# the test suite.
test: setup try-setup-detectron2 lint-check
	$(PY) -m pytest

lint-check: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

demo: setup
	$(PY) tools/demo.py

# Fixes what ruff can fix and formats the code.
lint: setup
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

benchmark: setup
	$(PY) tools/benchmark.py

clean-venv:
	rm -rf $(VENV)
