# Two commands do all the set-up on a fresh machine (only Python 3.11+ and make needed):
#   make demo   - start a cluster, run a scripted session, stop
#   make test   - run the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTO_DIR := protofiles/minipay/v1
PROTOS := $(wildcard $(PROTO_DIR)/*.proto)
# protoc -I protofiles: the .proto files import each other as "minipay/v1/...", and the
# Python modules land in the minipay.v1 package.
GENERATED := $(patsubst protofiles/%.proto,%_pb2.py,$(PROTOS))
DATA ?= data
PYTEST_ARGS ?=
BENCH_ARGS ?=
BENCH_CONSOLE_ARGS ?=
DEMO_ARGS ?=
# make up: the gateway's port, and the first bank's (the others follow: alpha, beta, gamma).
GATEWAY_PORT ?= 50051
CONSOLE_PORT ?= 8080
BANK_PORT ?= 50061
# make up: how many gateway replicas, and the PostgreSQL server they need (empty: SQLite),
# where the databases are DATABASE_PREFIX_gateway, DATABASE_PREFIX_alpha...
GATEWAYS ?= 1
DATABASE_URL ?=
DATABASE_PREFIX ?= minipay

.PHONY: setup demo up console test test-unit lint bench bench-console migrate certs protos clean

setup: $(STAMP) $(GENERATED) certificate/dev/services-ca.pem certificate/dev/console.pem

# One editable distribution, minipay (the client library, the CLIs, minipay.v1), with what the
# servers need (the server extra), the tests, the dev tools and the web console.
$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[server,test,dev,console]'
	touch $(STAMP)

# Generated code is made from the .proto files, never committed: into the working tree by the
# editable install and again here whenever a .proto changes (a wheel makes its own copy).
$(GENERATED) &: $(PROTOS) $(STAMP)
	$(PY) -m grpc_tools.protoc -I protofiles --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)

protos: $(GENERATED)

certificate/dev/services-ca.pem: | $(STAMP)
	$(PY) -m certificate init

# The console's own client certificate (every console user's token is bound to it).
certificate/dev/console.pem: | certificate/dev/services-ca.pem
	$(PY) -m certificate issue-client console

certs: setup
	$(PY) -m certificate init
	$(PY) -m certificate issue-client console

migrate: setup
	mkdir -p $(DATA)
	$(PY) -m alembic -n gateway -x url=sqlite:///$(DATA)/gateway.db upgrade head
	for bank in alpha beta gamma; do \
	  $(PY) -m alembic -n bank -x url=sqlite:///$(DATA)/bank-$$bank.db upgrade head || exit 1; \
	done

# `exec`: the Python process replaces the recipe's shell, so the SIGTERM that make passes to
# its child reaches it, and it stops every server (a shell would die and leave them running).
# The demo makes its own databases in a temporary folder: no `migrate` first.
# make demo DEMO_ARGS=--keep: after the script, the cluster and the console stay up for a look.
demo: setup
	exec $(PY) -m devtools.demo $(DEMO_ARGS)

# make up GATEWAYS=3 DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432 runs replicas.
up: setup
	exec $(PY) -m devtools.cluster --data-dir "$(DATA)" --gateway-port $(GATEWAY_PORT) \
	  --bank-port $(BANK_PORT) --gateways $(GATEWAYS) --database-url "$(DATABASE_URL)" \
	  --database-prefix "$(DATABASE_PREFIX)" --console-port $(CONSOLE_PORT)

# The web console alone on 127.0.0.1:$(CONSOLE_PORT), for a gateway started otherwise (make up
# starts one itself; make up CONSOLE_PORT=0 does not).
console: setup
	$(PY) -m console --listen 127.0.0.1:$(CONSOLE_PORT) --gateway 127.0.0.1:$(GATEWAY_PORT)

# Every test, the fast domain tests (tests/unit) included. Two workers, each taking whole
# test files (--dist loadfile): a file's shared clusters start once, and no worker is left
# with a queue of slow tests it was handed early while the other one idles.
test: setup
	$(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

# The domain tests alone: no process, no socket, a few seconds.
test-unit: setup
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

LINTED := server client admin certificate devtools minipay console tests alembic/env.py setup.py

# make lint also needs npm (Node.js) for the buf CLI, pinned in tools/package-lock.json and
# installed into tools/node_modules (git-ignored): once, and again when the lock file changes.
# --ignore-scripts: the package's postinstall only swaps its launcher for the platform binary
# that the launcher finds by itself anyway.
BUF := tools/node_modules/.bin/buf
BUF_STAMP := tools/node_modules/.installed

$(BUF_STAMP): tools/package.json tools/package-lock.json
	cd tools && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

# buf reads buf.yaml here: the module is protofiles/, the rules buf's STANDARD set.
lint: setup $(BUF_STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy server client admin certificate devtools minipay console tests
	$(BUF) lint
	$(BUF) format -d --exit-code

# Each console page's server-side render time with 10^5 payments stored (a minute).
bench-console: setup
	$(PY) -m devtools.bench.console_pages $(BENCH_CONSOLE_ARGS)

# The echo baseline, then a fresh cluster per run; every throughput also as a ratio to the echo.
#   make bench BENCH_ARGS="--gateways 2 --database-url postgresql+psycopg://postgres@127.0.0.1:5432"
#   make bench BENCH_ARGS="--sweep --configs sqlite:1,postgres:1,postgres:2 --database-url ..."
#   make bench BENCH_ARGS="--failover --database-url ..."   (kill -9 of a replica under load)
#   make bench BENCH_ARGS="--preload 1000000"   (a day of payments first; history and replays)
#   make bench BENCH_ARGS="--help"   (every flag)
bench: setup
	$(PY) -m devtools.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(DATA) minipay/v1/*_pb2*.py minipay/v1/*_pb2.pyi
	rm -rf tools/node_modules examples/node/node_modules
