# One command to run, one to test. Everything lives in .venv; pip only.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint typecheck bench clean messages

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/foodlab db upgrade
	$(BIN)/foodlab up

# The slowest tests are listed at the end, so a CI log shows where its minutes went.
test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=30 $(PYTEST_ARGS)

# The edit-test loop: no worker processes, databases other than SQLite, browser or
# torch.compile; tests that take more than a few seconds are marked slow and left out. One
# test process per core (a test file stays in one, so its fixtures are built once), each with
# one OpenMP thread: processes with several would busy-wait on each other's cores. Only the
# plugins it uses are loaded (schemathesis's would import Hypothesis into every process), and
# bytecode is cached even where the environment says not to, so a rerun compiles only what
# changed.
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 PYTHONDONTWRITEBYTECODE= \
		$(BIN)/python -m pytest -q \
		-p xdist.plugin -p pytest_timeout -n auto --dist loadfile \
		-m "not integration and not slow and not browser" $(PYTEST_ARGS)

lint: $(STAMP) typecheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Report translations: extract the marked messages, merge them into each catalogue (translate
# what is new in analysis/locale/<lang>/LC_MESSAGES/foodlab.po), compile the .mo that is committed.
messages: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k N_ -k ngettext:1,2 --no-location --sort-output \
		--omit-header -w 100 -o analysis/locale/foodlab.pot .
	$(BIN)/pybabel update -i analysis/locale/foodlab.pot -d analysis/locale -D foodlab \
		--no-fuzzy-matching --ignore-obsolete -w 100
	$(BIN)/pybabel compile -d analysis/locale -D foodlab --statistics

clean:
	rm -rf var .pytest_cache
