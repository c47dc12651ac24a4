# Everything the project needs is installed by these targets into .venv.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv sysdeps test image-test lint unit demo bench fuzz proto clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check gateway loadtest tests
	$(BIN)/ruff format --check gateway loadtest tests
	$(BIN)/mypy

# System packages some tests drive for real (headless Chromium for the HTML
# report, nginx as a gRPC load balancer, redis-server for the redis rollout
# store, podman/runc/mmdebstrap to build and run the container image). Installed with apt-get when running as root (CI, developer machines);
# elsewhere those tests skip with a message.
SYSPKGS := chromium nginx openssl redis-server podman runc mmdebstrap
sysdeps:
	@missing=""; for p in $(SYSPKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null) \
	      || echo "warning: could not install$$missing"; \
	  else echo "note: system packages missing ($$missing); tests needing them will skip"; fi; \
	fi

test: lint sysdeps
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not image" --durations=15

# The container image built from the Dockerfile and run (podman or docker; skips, saying
# why, where no engine can run a container). CI runs it after `make test`.
image-test: $(STAMP) sysdeps
	$(BIN)/python -m pytest -q -p no:cacheprovider -m image

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

demo: $(STAMP)
	$(BIN)/python -m gateway demo

bench: $(STAMP)
	$(BIN)/python -m loadtest.bench

# the protobuf-aware fuzzer against its own gateway (models built in a temp dir)
fuzz: $(STAMP)
	$(BIN)/python -m loadtest.fuzz --serve --count $${GATEWAY_FUZZ_COUNT:-100000} --seed $${GATEWAY_FUZZ_SEED:-0}

proto: $(STAMP)
	$(BIN)/python scripts/genproto.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache demo-run
