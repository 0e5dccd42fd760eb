# ami-sweeper developer entry points. `make demo` and `make test` are the two that matter.

# One target directory shared by every checkout on this machine, so CI reuses the build.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/ami-sweeper/target
CARGO ?= cargo
PYTHON ?= python3
# The local EC2 emulator, pinned, in a virtualenv that survives between runs.
VENV ?= $(HOME)/.cache/ami-sweeper/venv
MOTO_VERSION := 5.2.1
MOTO_STAMP := $(VENV)/.moto-$(MOTO_VERSION)
export MOTO_SERVER := $(VENV)/bin/moto_server
NOW ?= 2026-11-26T00:00:00Z

.PHONY: demo test lint fmt bench-plan bench-sweep clean emulator

## The main job on its local default: plan the sample estate with the sample policy.
demo:
	$(CARGO) run --quiet -- plan --policy samples/policy.json --images samples/images.json \
	    --instances samples/instances.json --launch-templates samples/launch-templates.json \
	    --launch-configurations samples/launch-configurations.json --now $(NOW) --format table

## The whole test suite: formatting, lints, unit, property, mock and emulator tests.
test: lint $(MOTO_STAMP)
	$(CARGO) test --locked

## Installs the pinned emulator once.
emulator: $(MOTO_STAMP)
$(MOTO_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'moto[server]==$(MOTO_VERSION)'
	touch $@

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt

## Planner benchmark: 100,000 images, grouped policy; prints wall time and peak memory.
BENCH_IMAGES ?= 100000
bench-plan:
	$(CARGO) build --release --locked --bin ami-sweeper --example gen_estate
	mkdir -p bench-out
	$(CARGO_TARGET_DIR)/release/examples/gen_estate $(BENCH_IMAGES) bench-out/plan
	@echo "== plan over $(BENCH_IMAGES) images (release build, $$(nproc) cores)"
	@$(PYTHON) scripts/measure.py "baseline: python json.load of images.json" 5 -- \
	    $(PYTHON) -c 'import json,sys; json.load(open(sys.argv[1]))' bench-out/plan/images.json
	@$(PYTHON) scripts/measure.py "ami-sweeper plan --format json" 5 -- \
	    $(CARGO_TARGET_DIR)/release/ami-sweeper plan --policy bench/policy-grouped.json \
	    --images bench-out/plan/images.json --instances bench-out/plan/instances.json \
	    --now $(NOW) --format json
	@$(CARGO_TARGET_DIR)/release/ami-sweeper plan --policy bench/policy-grouped.json \
	    --images bench-out/plan/images.json --instances bench-out/plan/instances.json \
	    --now $(NOW) --format table | tail -4

## Sweep benchmark: 2,000 emulated images, dry and real run; wall time, memory, API calls.
bench-sweep: $(MOTO_STAMP)
	$(CARGO) build --release --locked --bin ami-sweeper
	$(PYTHON) scripts/bench_sweep.py $(CARGO_TARGET_DIR)/release/ami-sweeper $(MOTO_SERVER) 2000

clean:
	rm -rf bench-out
