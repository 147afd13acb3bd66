# fraudstream: the two quick-start commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint typecheck bench clean

install: $(STAMP)

# With Java 17+ and Maven, also fetch Apache Kafka's jars from Maven Central into
# ~/.cache/fraudstream (the tests' broker); without them one line says the embedded one is used.
$(STAMP): pyproject.toml kafka/pom.xml streams/features/_card.pyx streams/_schema.pyx
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m streams.kafka.apache fetch --optional
	touch $(STAMP)

demo: install
	$(BIN)/fraudstream demo

# The whole suite: lint, types, unit tests, integration tests on a real broker.
test: install lint typecheck
	$(BIN)/python -m pytest -q -rs

test-fast: install
	$(BIN)/python -m pytest -q -m "not integration and not slow"

lint: install
	$(BIN)/ruff check streams tests

typecheck: install
	$(BIN)/mypy

bench: install
	$(BIN)/fraudstream bench --json bench.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
