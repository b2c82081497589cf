# Two commands do all the set-up on a fresh machine (only Python 3.11+ and make needed):
#   make demo   - start a cluster, run a scripted session, stop
#   make test   - run the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTO_DIR := protofiles/minipay/v1
PROTOS := $(wildcard $(PROTO_DIR)/*.proto)
GENERATED := $(PROTOS:.proto=_pb2.py)
DATA ?= data
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: setup demo up test lint bench migrate certs protos clean

setup: $(STAMP) $(GENERATED) certificate/dev/ca.pem

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

# Generated code is made here, at install time, from the .proto files (never committed).
$(GENERATED) &: $(PROTOS) $(STAMP)
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)

protos: $(GENERATED)

certificate/dev/ca.pem: | $(STAMP)
	$(PY) -m certificate init

certs: setup
	$(PY) -m certificate init

migrate: setup
	mkdir -p $(DATA)
	$(PY) -m alembic -n gateway -x url=sqlite:///$(DATA)/gateway.db upgrade head
	for bank in alpha beta gamma; do \
	  $(PY) -m alembic -n bank -x url=sqlite:///$(DATA)/bank-$$bank.db upgrade head || exit 1; \
	done

demo: setup migrate
	$(PY) -m server.demo

up: setup migrate
	$(PY) -m server.cluster --data-dir $(DATA)

test: setup
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check server client admin certificate tests alembic/env.py
	$(VENV)/bin/ruff format --check server client admin certificate tests alembic/env.py
	$(VENV)/bin/mypy server client admin certificate

bench: setup
	$(PY) -m client.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(DATA) $(PROTO_DIR)/*_pb2*.py $(PROTO_DIR)/*_pb2.pyi
