# The README's commands. Each creates .venv from requirements/lock.txt when it is missing.
#   make run [SMOKE=1 | FULL=1] [NOTEBOOKS=01,03] [RESUME=1]   the main job: notebooks -> reports/
#                                                   (RESUME=1: skip the notebooks already finished with the same code)
#   make test                                       unit tests + every notebook in smoke mode
#   make lab                                        JupyterLab with the lepton_nb kernel
#   make bench                                      benchmarks -> reports/bench/*.json
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lepton_nb-installed

# Python 3.11 is required: TF 2.14 / TFF 0.87 / tensorflow-privacy 0.9 do not install on 3.12.
PYTHON311 := $(shell for p in python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && [ "$$($$p -c 'import sys; print(sys.version_info[:2] == (3, 11))' 2>/dev/null)" = True ] \
	&& { command -v $$p; break; }; done)

MODE_FLAG := $(if $(filter 1,$(SMOKE)),--smoke,$(if $(filter 1,$(FULL)),--full,))
NB_FLAG := $(if $(NOTEBOOKS),--notebooks $(NOTEBOOKS),)
RESUME_FLAG := $(if $(filter 1,$(RESUME)),--resume,)

.PHONY: run test lab bench venv check-env clean-reports

venv: $(STAMP)

$(STAMP): requirements/lock.txt pyproject.toml
	@if [ -z "$(PYTHON311)" ]; then \
		echo "error: lepton_nb needs Python 3.11 (TF 2.14.1, TFF 0.87.0 and tensorflow-privacy 0.9.0 do not install on newer Pythons)."; \
		for p in python3.11 python3; do command -v $$p >/dev/null 2>&1 && echo "  found: $$p -> $$($$p --version 2>&1)"; done; \
		echo "  install it, e.g. 'apt-get install python3.11 python3.11-venv' or pyenv, then re-run."; \
		exit 1; fi
	@echo ">> creating $(VENV) with $(PYTHON311) from requirements/lock.txt"
	@if [ ! -x $(PY) ]; then $(PYTHON311) -m venv $(VENV) || { rm -rf $(VENV); echo "error: 'python3.11 -m venv' failed; on Debian/Ubuntu: apt-get install python3.11-venv"; exit 1; }; fi
	$(PY) -m pip install --quiet --no-deps -r requirements/lock.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name lepton_nb --display-name "Python 3.11 (lepton_nb)" >/dev/null
	@echo ">> pip check (expected: only the overrides listed in README.md)"
	@$(PY) -m pip check || true
	@touch $(STAMP)

run: $(STAMP)
	$(PY) -m lepton_nb run $(MODE_FLAG) $(NB_FLAG) $(RESUME_FLAG)

# Unit tests, then every notebook executed in smoke mode as `make run` executes it (tests/test_notebooks.py).
test: $(STAMP)
	LEPTON_NB_SMOKE=1 TF_CPP_MIN_LOG_LEVEL=3 $(PY) -m pytest tests

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root,)

bench: $(STAMP)
	$(PY) -m lepton_nb bench $(if $(filter 1,$(FULL)),--full,)

check-env: $(STAMP)
	$(PY) -m pip check || true
	$(PY) -c "import tensorflow as tf, tensorflow_federated as tff, tensorflow_privacy, tf_explain; print('tf', tf.__version__, 'tff', tff.__version__)"

clean-reports:
	rm -rf reports
