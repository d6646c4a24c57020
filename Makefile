# make reproduce   create the environment and run the whole series (PROFILE=cpu by default;
#                  RETRAIN=1 trains the baseline even where the profile ships one)
# make test        unit tests + nbval regression of the notebooks on the smoke profile (what CI runs)
# make lint        ruff over helpers/, tests/ and notebooks/ (part of make test)
# make test-fast   the unit tests that start no kernel or subprocess and train for seconds at most
# make test-paper  notebooks 01-08 on the paper profile (torchvision VGG-16), a subset of the real data
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
export LRP_DATA_DIR ?= $(CURDIR)/data

.PHONY: reproduce lint test test-fast test-paper notebooks readme gpu-check browser-check

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

reproduce: $(VENV)/.installed
	$(PY) -m helpers.tools.run --profile $(PROFILE) $(if $(RETRAIN),-p retrain true)
	if [ "$(PROFILE)" = cpu ]; then $(PY) -m helpers.reporting.report cpu; fi

lint: $(VENV)/.installed
	$(PY) -m ruff check helpers tests notebooks

test: lint
	tmp=$$(mktemp -d) && LRP_ARTIFACTS=$$tmp LRP_PROFILE=smoke TQDM_DISABLE=1 \
	  $(PY) -m pytest tests notebooks -m "not paper" --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider; \
	  status=$$?; rm -rf $$tmp; exit $$status

test-fast: $(VENV)/.installed
	tmp=$$(mktemp -d) && LRP_ARTIFACTS=$$tmp TQDM_DISABLE=1 \
	  $(PY) -m pytest tests -m "not slow" -p no:cacheprovider; \
	  status=$$?; rm -rf $$tmp; exit $$status

test-paper: $(VENV)/.installed
	TQDM_DISABLE=1 $(PY) -m pytest tests/test_paper.py -m paper -s -p no:cacheprovider

# Re-execute notebooks/ on the smoke profile to refresh the outputs nbval compares against.
notebooks: $(VENV)/.installed
	tmp=$$(mktemp -d) && LRP_ARTIFACTS=$$tmp $(PY) -m helpers.tools.run --store-smoke-outputs; \
	  status=$$?; rm -rf $$tmp; exit $$status

readme: $(VENV)/.installed
	$(PY) -m helpers.reporting.report $(PROFILE)

# On a GPU machine: CUDA unit tests, the smoke series on CUDA, training and LRP throughput.
gpu-check: $(VENV)/.installed
	$(PY) -m helpers.tools.gpu_check --out $${OUT:-.}/gpu_check.json

# The explorer (notebook 09) in headless Chromium through JupyterLab: needs the profile's baseline
# and `apt-get install chromium chromium-driver`; screenshots go to figures/$(PROFILE)/screens/.
browser-check: $(VENV)/.installed
	$(PY) -m helpers.tools.browser_check --profile $(PROFILE)
