# pipeline: a newcomer needs exactly two commands, `make demo` and `make test`.
# Both install what they need: moto (a local AWS) into .venv from PyPI.

SHELL := /bin/bash
CARGO ?= cargo
MOTO_VERSION := 5.2.5
VENV := $(CURDIR)/.venv
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)

# The fixtures start moto with this interpreter, from this checkout (not
# from wherever a shared target dir's build was compiled).
export PIPELINE_PYTHON := $(VENV)/bin/python
export PIPELINE_WORKSPACE := $(CURDIR)

.PHONY: test demo venv tools lint unit clean

## make test: formatting, lints, docs, unit tests and the end-to-end tests against moto.
test: venv lint unit

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --locked

unit: venv tools
	$(VENV)/bin/python fixtures/moto/test_realistic.py
	$(CARGO) test --workspace --locked

## make demo: start a local AWS, seed a small world, run the pipeline against it.
demo: venv
	$(CARGO) build --locked -p pipeline-ci -p pipeline-fixtures --bins
	PIPELINE_BIN=$(TARGET_DIR)/debug/pipeline $(TARGET_DIR)/debug/demo

# The marker's name changes whenever the set of packages does (deps-2: added
# check-jsonschema, for integrations/validate.sh; deps-3: cbor2, for CloudWatch's
# CBOR protocol in fixtures/moto/server.py), so an existing .venv updates.
venv: $(VENV)/.moto-$(MOTO_VERSION)-deps-3

$(VENV)/.moto-$(MOTO_VERSION)-deps-3:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'moto[server]==$(MOTO_VERSION)' 'check-jsonschema==0.39.0' 'cbor2==5.6.5'
	touch $@

# tmux gives the progress test a real terminal; Debian's package, if missing.
tools:
	@command -v tmux >/dev/null || { apt-get update -qq && apt-get install -y -qq tmux >/dev/null; }
# Chromium renders the status --html dashboard in its test; Debian's package, if missing.
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

clean:
	$(CARGO) clean
	rm -rf $(VENV) .demo
