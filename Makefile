# `make run` starts the whole stack locally; `make test` runs the test suite. Both install into .venv first.
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CHECKOV_VENV := $(VENV)/checkov
TEST_TOOLS_STAMP := $(VENV)/.test-tools-stamp
HOST_PYTHON ?= python3

.PHONY: install run test containers lint samples bench constraints proto docs clean

install: $(STAMP)

$(STAMP): requirements/*.txt constraints.txt pyproject.toml
	test -x $(PYTHON) || $(HOST_PYTHON) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip==26.3
	# torch first and alone: its CPU build. Anything installed before it that depends on torch would
	# make pip fetch the default build and several GB of CUDA packages.
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -r requirements/dev.txt -c constraints.txt
	# The `msaas` command (pyproject.toml [project.scripts]); editable, so it runs this checkout's code.
	$(PYTHON) -m pip install --quiet --no-deps -e .
	# tcmalloc, which Demucs runs about 15% faster with (DEMUCS_MALLOC); without it the worker warns and uses malloc.
	/sbin/ldconfig -p 2>/dev/null | grep -q libtcmalloc_minimal || { \
	  command -v apt-get >/dev/null || { echo "note: install tcmalloc (Debian: libtcmalloc-minimal4) for faster separations"; true; } && \
	  if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	  ! command -v apt-get >/dev/null || { $$sudo apt-get update && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y libtcmalloc-minimal4; }; }
	touch $(STAMP)

# What only the tests need, so `make run` works on a laptop without them.
$(TEST_TOOLS_STAMP): $(STAMP) requirements/checkov.txt requirements/checkov-constraints.txt
	# The web page's browser test drives Debian's chromium through Playwright (never a browser it downloads).
	command -v chromium >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "the browser test needs chromium: install it (Debian: apt-get install chromium)"; exit 1; }; \
	  if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	  $$sudo apt-get update && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y chromium; }
	# checkov in a virtualenv of its own: its exact pins conflict with .venv's (requirements/checkov.txt).
	test -x $(CHECKOV_VENV)/bin/python || $(HOST_PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip==26.3
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r requirements/checkov.txt -c requirements/checkov-constraints.txt
	touch $(TEST_TOOLS_STAMP)

run: install
	$(PYTHON) -m devstack

# The three images, built with podman and started as the manifests say by tests/test_containers.py
# (docs/deployment.md, "Containers built and started here"). podman reads this repo's containers.conf, whatever the
# machine's says.
containers test: export CONTAINERS_CONF := $(CURDIR)/tests/containers/containers.conf
containers: install
	command -v podman >/dev/null && command -v buildah >/dev/null && command -v skopeo >/dev/null \
	  && command -v runc >/dev/null && command -v debootstrap >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "the container test needs podman, buildah, skopeo, runc and debootstrap: install them"; exit 1; }; \
	  if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	  $$sudo apt-get update && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y \
	    podman buildah skopeo runc debootstrap uidmap fuse-overlayfs slirp4netns; }
	# The stand-in base image (cached in .containers/), then the images; both reuse what an earlier run built.
	PYTHON=$(PYTHON) bash tests/containers/build-images.sh

test: install $(TEST_TOOLS_STAMP) containers
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest

lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

samples: install
	$(PYTHON) data/generate.py

# The benchmarks (bench/run.py): about 2 hours on 2 cores; `make bench BENCH_ARGS=--quick` about 45 minutes.
bench: install
	$(PYTHON) bench/run.py $(BENCH_ARGS)

# The gRPC contract's Python code (msaas/v1/), generated from proto/ and committed, so the images and the `msaas`
# command need no code generator; tests/test_rpc_contract.py fails when it is stale. The proto's Options message is
# written from the options table first (proto/generate.py).
PROTOC := $(PYTHON) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=.
proto: install
	$(PYTHON) proto/generate.py
	$(PROTOC) proto/msaas/v1/separation.proto

# The tables of docs/*.md that the code defines (options, status fields, errors), written by docs/generate.py;
# tests/test_docs.py fails while one is stale.
docs: install
	$(PYTHON) docs/generate.py

# Regenerate the full pin list after changing requirements/*.txt.
constraints: install $(TEST_TOOLS_STAMP)
	{ sed -n '1,2p' constraints.txt; $(PYTHON) -m pip freeze --exclude-editable | grep -viE '^(torch|pip|setuptools)=='; } > constraints.new
	mv constraints.new constraints.txt
	{ sed -n '1p' requirements/checkov-constraints.txt; $(CHECKOV_VENV)/bin/python -m pip freeze | grep -viE '^(pip|setuptools)=='; } > requirements/checkov-constraints.new
	mv requirements/checkov-constraints.new requirements/checkov-constraints.txt

clean:
	rm -rf $(VENV) .devstack output
