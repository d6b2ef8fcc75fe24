# Two entry points, both safe to re-run: `make bench` and `make test`.
# `setup` installs only what is missing; a stamp keyed on pyproject.toml keeps re-runs fast.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := fuse3 libfuse3-dev pkg-config fio liburing-dev qemu-system-common qemu-utils \
                kmod passwd util-linux gcc python3-dev qemu-system-x86 busybox-static \
                g++ ninja-build libnuma-dev python3-venv
SUITE ?= quick
BENCH_ARGS ?=

# `make test-guest KERNEL=7.3`: the kernel-dependent tests inside a guest on KERNEL (a cached
# name, fetched when missing, or a path to a kernel image / build tree).
KERNEL ?= 7.3
GUEST_TESTS ?= tests/test_semantics.py tests/test_integrity.py tests/test_faults.py \
               tests/test_unprivileged.py
# The bounded subset .ci/run runs in a 7.3 guest after the host suite (see README): the
# uring transport's semantics on 6.14-style buffers and on pinned zero-copy pools, the pool
# modes' own tests, integrity, three faults and one unprivileged serve; tests/guest-ci.args
# names them (pytest reads @FILE as arguments).
GUEST_CI_TESTS ?= @tests/guest-ci.args
GUEST := $(VENV)/bin/ringside guest --kernel $(KERNEL) --command --
GUEST_PYTEST := $(PY) -m pytest -p no:cacheprovider --timeout 3600

.PHONY: setup peers bench test test-guest test-guest-ci guest-kernel lint clean-mounts

setup: $(VENV)/.installed
	@bash .ci/host-setup.sh

# The compiled module (transports._native) is built by pip: a change to its C, its headers or
# its builder reinstalls (transports/native/sources.py lists them; the module refuses a stale build).
NATIVE_SOURCES := $(wildcard transports/native/build.py transports/native/sources.py \
	transports/builtin/uring/*.c transports/builtin/uring/*.h \
	transports/sched/*.c transports/sched/*.h \
	transports/datapath/*.c transports/datapath/*.h transports/fuse/fuse_abi.h)

$(VENV)/.installed: pyproject.toml Makefile $(NATIVE_SOURCES)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to install: apt-get install $$missing" >&2; exit 1; fi; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# libfuse's servers (the `libfuse` transport) built from Debian sid's fuse3 source into
# .cache/peers/ once; kept there (`ringside peers list`).
peers: setup
	$(VENV)/bin/ringside peers fetch libfuse --if-missing

bench: setup peers
	$(VENV)/bin/ringside bench --suite $(SUITE) $(BENCH_ARGS)

test: setup peers
	@# tests/test_guest.py boots the 7.3 guest kernel: CI fetches it (elsewhere it is skipped).
	@if [ "$$CI" = true ]; then $(MAKE) --no-print-directory guest-kernel KERNEL=7.3; fi
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

guest-kernel: setup
	@case "$(KERNEL)" in */*) ;; *) $(VENV)/bin/ringside kernel fetch --if-missing $(KERNEL);; esac

test-guest: guest-kernel
	$(GUEST) $(GUEST_PYTEST) $(GUEST_TESTS) $(PYTEST_ARGS)

test-guest-ci: guest-kernel
	$(GUEST) $(GUEST_PYTEST) $(GUEST_CI_TESTS) $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check harness transports tests notebooks

clean-mounts:
	@awk '$$3 ~ /^fuse/ {print $$2}' /proc/mounts | xargs -r -n1 umount -l
