# Entry points: `make demo` (set up, then run the offline demo job), `make test` (set up, then every check) and
# `make lab` (set up, then JupyterLab on the notebooks in nbs/).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lab setup sync-check

setup: $(VENV)/.installed

# Reinstall whenever the project's dependency list changes.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/qvit demo

# Interactive use: each notebook in nbs/ is a runnable tutorial of its layer (JupyterLab is a project dependency).
lab: setup
	$(BIN)/jupyter lab --notebook-dir=nbs $(if $(filter 0,$(shell id -u)),--allow-root)

# Notebooks must be stripped and the package in sync with them: clean + export may not change anything.
sync-check: setup
	@before="$$(git status --porcelain; git diff | sha1sum)"; \
	$(BIN)/nbdev-clean && $(BIN)/nbdev-export; \
	after="$$(git status --porcelain; git diff | sha1sum)"; \
	if [ "$$before" != "$$after" ]; then \
	  echo "nbdev-clean/nbdev-export changed files: strip notebooks and export, then commit"; git status --short; exit 1; fi

test: sync-check
	$(BIN)/ruff check qvit_nb tests benchmarks    # unused imports, undefined names, redefinitions, lines over 120
	$(BIN)/nbdev-test --n-workers 2
	$(BIN)/python -m pytest -q -n 2 --dist loadfile    # two workers on the two cores, one test file each (pytest-xdist)
