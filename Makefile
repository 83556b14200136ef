# aufs-harness: `make run` (the main job) and `make test` (every test).
# Both install what they need, idempotently: Debian packages, then a venv.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Host tools the harness drives. Kernel build tools are here too: every aufs
# run builds a patched kernel. chromium renders the HTML report in its test.
# uidmap: newuidmap/newgidmap, with which a normal user builds the guest image
# in a user namespace (mmdebstrap --mode=unshare).
DEB_PACKAGES := qemu-system-x86 qemu-utils mmdebstrap uidmap e2fsprogs dosfstools mtools \
	openssh-client openssh-server python3-venv python3-pip git ca-certificates \
	build-essential bc bison flex libelf-dev libssl-dev cpio kmod patch \
	ccache xz-utils zstd dwarves rsync \
	chromium syslinux syslinux-common fdisk

.PHONY: run test deps venv lint typecheck unit integration bench clean help

help:
	@echo "make run    run the default kernel matrix: bookworm's and trixie's stock kernels with"
	@echo "            overlayfs, and a bullseye aufs kernel when AUFS_HARNESS_AUFS_SRC is set"
	@echo "make test   lint, type-check and run every test (unit and integration)"
	@echo "make bench  print the benchmark figures (boot, build, suite)"

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; \
	  if [ "$$(id -u)" != 0 ]; then \
	    command -v sudo >/dev/null || { echo "missing Debian packages:$$missing: install them as root (apt-get install$$missing), then run make again" >&2; exit 2; }; \
	    sudo="sudo"; \
	    echo "missing Debian packages:$$missing"; \
	    echo "running sudo apt-get to install them (the only step that needs root)"; \
	  else echo "installing Debian packages:$$missing"; fi; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml | deps
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

venv: deps $(STAMP)

# The shipped default matrix (harness/matrices/default.toml); ARGS go to
# `aufs-harness matrix run`, e.g. ARGS="--baseline harness/baselines/bullseye-aufs5.10.toml".
BASELINE ?= harness/baselines/bullseye-aufs5.10.toml
run: venv
	$(BIN)/aufs-harness matrix run --baseline $(BASELINE) $(ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest tests/unit -q

integration: venv
	$(BIN)/pytest tests/integration -v

# Lint and types first (seconds), then every test with reasons for skips.
test: venv lint typecheck
	$(BIN)/pytest tests -v -rs --durations=15

# Figures, not pass/fail: boot-to-SSH, suite wall time, and (with an aufs
# source in AUFS_HARNESS_AUFS_SRC, fix-ups in AUFS_HARNESS_FIXUP_DIR) builds.
bench: venv
	$(BIN)/python bench/boot.py
	$(BIN)/python bench/suite.py
	$(BIN)/python bench/matrix.py
	@if [ -n "$$AUFS_HARNESS_AUFS_SRC" ]; then \
	  $(BIN)/python bench/build.py --kernel debian:bullseye=5.10.223-1 --aufs-src "$$AUFS_HARNESS_AUFS_SRC" \
	    $${AUFS_HARNESS_FIXUP_DIR:+--fixup-dir "$$AUFS_HARNESS_FIXUP_DIR"}; \
	else echo "bench/build.py skipped: set AUFS_HARNESS_AUFS_SRC to an aufs-standalone clone or URL"; fi

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache results
