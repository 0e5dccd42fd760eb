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
# Packaging tools (SAM CLI, cfn-lint; cargo-lambda and Zig for `make build`), pinned.
TOOLS ?= $(HOME)/.cache/ami-sweeper/tools
TOOLS_STAMP := $(TOOLS)/.sam-1.170.0-cfn-lint-1.58.0
LAMBDA_STAMP := $(TOOLS)/.cargo-lambda-1.9.2-zig-0.17.1
export SAM_CLI_TELEMETRY := 0
EVENT ?= events/manual-dry-run.json
NOW ?= 2026-11-26T00:00:00Z

.PHONY: demo demo-rules plan-samples plan-rules plan-thinning test test-unit docs lint fmt bench-plan bench-sweep bench-lambda bench bench-org bench-fanout clean emulator template-check build invoke deploy

## The main job on its local default: the local EC2 emulator with a realistic estate,
## the dry-run plan, then the nightly sweep and its report. FORMAT=json for JSON.
FORMAT ?= table
demo: $(MOTO_STAMP)
	$(CARGO) build --quiet --locked --bin ami-sweeper
	$(VENV)/bin/python demo/demo.py $(CARGO_TARGET_DIR)/debug/ami-sweeper $(MOTO_SERVER) --format $(FORMAT)

## Several retention rules in one run: legacy, golden, CI and nightly images on the
## emulator, each family decided by its rule (demo/policy-rules.json, first match wins).
demo-rules: $(MOTO_STAMP)
	$(CARGO) build --quiet --locked --bin ami-sweeper
	$(VENV)/bin/python demo/demo_rules.py $(CARGO_TARGET_DIR)/debug/ami-sweeper $(MOTO_SERVER)

## The offline planner on the AWS CLI samples in samples/.
plan-samples:
	$(CARGO) run --quiet -- plan --policy samples/policy.json --images samples/images.json \
	    --instances samples/instances.json --launch-templates samples/launch-templates.json \
	    --launch-configurations samples/launch-configurations.json --now $(NOW) --format table

## Several retention rules in one policy (first match wins): the four families of
## samples/rules/, offline.
plan-rules:
	$(CARGO) run --quiet -- plan --policy samples/rules/policy.json --images samples/rules/images.json \
	    --now $(NOW) --format table

## Thinning (one a week, then one a month, nothing past a year): the golden lineage of
## samples/thinning/, offline.
plan-thinning:
	$(CARGO) run --quiet -- plan --policy samples/thinning/policy.json \
	    --images samples/thinning/images.json --now $(NOW) --format table

## The whole test suite: formatting, lints, template checks, unit, property, mock and
## emulator tests (the Lambda events included).
test: lint template-check $(MOTO_STAMP) $(LAMBDA_STAMP)
	CARGO_LAMBDA=$(TOOLS)/bin/cargo-lambda $(CARGO) test --workspace --locked

## The quick offline loop: every test that needs no emulator, no cargo-lambda and no
## network (the core crate whole, then readers, application on in-memory ports, CLI and
## mocked SDK), with cargo alone. `cargo test -p ami-sweeper-core` is quicker still.
test-unit:
	$(CARGO) test --locked -p ami-sweeper-core
	$(CARGO) test --locked -p ami-sweeper --lib
	$(CARGO) test --locked -p ami-sweeper --test tests -- cli:: aws_mocks:: executor:: docs::

## Regenerates what the docs embed from the code: the policy reference in docs/policy.md
## (`ami-sweeper schema --format markdown`); the docs tests fail until it is current.
docs:
	UPDATE_GOLDEN=1 $(CARGO) test --locked -p ami-sweeper --test tests -- docs::

## cfn-lint, `sam validate --lint`, and the deployment contract cfn-lint cannot see.
template-check: $(TOOLS_STAMP)
	$(TOOLS)/bin/cfn-lint template.yaml template-member.yaml
	$(TOOLS)/bin/sam validate --lint --region us-east-1 --template template.yaml
	$(TOOLS)/bin/python scripts/check_template.py template.yaml template-member.yaml

$(TOOLS_STAMP):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check 'aws-sam-cli==1.170.0' 'cfn-lint==1.58.0'
	touch $@

$(LAMBDA_STAMP): $(TOOLS_STAMP)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check 'cargo-lambda==1.9.2' 'ziglang==0.17.1'
	touch $@

## The deployable arm64 bootstrap (needs the aarch64 Rust target: rustup fetches it).
build: $(LAMBDA_STAMP)
	PATH=$(TOOLS)/bin:$$PATH cargo lambda build --release --arm64 --bin ami-sweeper

## What `sam local invoke -e EVENT` does, without Docker: the handler on an event file.
invoke:
	$(CARGO) run --quiet -- invoke $(EVENT)

## Build with SAM (cargo-lambda) and deploy with a guided prompt.
deploy: $(LAMBDA_STAMP)
	PATH=$(TOOLS)/bin:$$PATH $(TOOLS)/bin/sam build
	PATH=$(TOOLS)/bin:$$PATH $(TOOLS)/bin/sam deploy --guided

## Installs the pinned emulator once.
emulator: $(MOTO_STAMP)
$(MOTO_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'moto[server]==$(MOTO_VERSION)'
	touch $@

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

# One release build for every benchmark (the example pulls in dev-dependency features;
# building the binary alone would compile the SDK a second time).
RELEASE_BUILD = $(CARGO) build --release --locked --bin ami-sweeper --example gen_estate

## Planner benchmark: 100,000 images, grouped policy; prints wall time and peak memory.
## Then the same estate under a ten-rule policy (each rule decides a tenth) and the ratio
## of the two medians; then the grouped policy with three thinning windows (week, month,
## none) and its ratio to the plan without thinning.
BENCH_IMAGES ?= 100000
bench-plan:
	$(RELEASE_BUILD)
	mkdir -p bench-out
	$(CARGO_TARGET_DIR)/release/examples/gen_estate $(BENCH_IMAGES) bench-out/plan
	@echo "== plan over $(BENCH_IMAGES) images (release build, $$(nproc) cores)"
	@$(PYTHON) scripts/measure.py "baseline: python json.load of images.json" 5 -- \
	    $(PYTHON) -c 'import json,sys; json.load(open(sys.argv[1]))' bench-out/plan/images.json
	@$(PYTHON) scripts/measure.py "ami-sweeper plan --format json" 5 -- \
	    $(CARGO_TARGET_DIR)/release/ami-sweeper plan --policy bench/policy-grouped.json \
	    --images bench-out/plan/images.json --instances bench-out/plan/instances.json \
	    --now $(NOW) --format json | tee bench-out/plan/one-rule.txt
	@$(CARGO_TARGET_DIR)/release/ami-sweeper plan --policy bench/policy-grouped.json \
	    --images bench-out/plan/images.json --instances bench-out/plan/instances.json \
	    --now $(NOW) --format table | tail -4
	@$(PYTHON) scripts/measure.py "ami-sweeper plan --format json, ten rules" 5 -- \
	    $(CARGO_TARGET_DIR)/release/ami-sweeper plan --policy bench/policy-ten-rules.json \
	    --images bench-out/plan/images.json --instances bench-out/plan/instances.json \
	    --now $(NOW) --format json | tee bench-out/plan/ten-rules.txt
	@$(CARGO_TARGET_DIR)/release/ami-sweeper plan --policy bench/policy-ten-rules.json \
	    --images bench-out/plan/images.json --instances bench-out/plan/instances.json \
	    --now $(NOW) --format table | grep -A3 '^by rule'
	@$(PYTHON) -c 'import re,sys; m=[float(re.search(r"median ([0-9.]+) s", open(f).read()).group(1)) for f in sys.argv[1:]]; print(f"ten rules / one rule: {m[1]/m[0]:.2f}x (limit 1.5x)")' \
	    bench-out/plan/one-rule.txt bench-out/plan/ten-rules.txt
	@$(PYTHON) scripts/measure.py "ami-sweeper plan --format json, three thinning windows" 5 -- \
	    $(CARGO_TARGET_DIR)/release/ami-sweeper plan --policy bench/policy-thinned.json \
	    --images bench-out/plan/images.json --instances bench-out/plan/instances.json \
	    --now $(NOW) --format json | tee bench-out/plan/thinned.txt
	@$(CARGO_TARGET_DIR)/release/ami-sweeper plan --policy bench/policy-thinned.json \
	    --images bench-out/plan/images.json --instances bench-out/plan/instances.json \
	    --now $(NOW) --format table | grep -A2 '^plan at'
	@$(PYTHON) -c 'import re,sys; m=[float(re.search(r"median ([0-9.]+) s", open(f).read()).group(1)) for f in sys.argv[1:]]; print(f"three thinning windows / one rule: {m[1]/m[0]:.2f}x (limit 1.5x)")' \
	    bench-out/plan/one-rule.txt bench-out/plan/thinned.txt

## Sweep benchmark: 2,000 emulated images, dry and real run; wall time, memory, API calls;
## the cost of the write-ahead mark and reconciliation; an orphan pass over 2,000 + 2,000.
bench-sweep: $(MOTO_STAMP)
	$(RELEASE_BUILD)
	$(VENV)/bin/python scripts/bench_sweep.py $(CARGO_TARGET_DIR)/release/ami-sweeper $(MOTO_SERVER) 2000

## Cold start figures: binary size, process start to first response (an event that needs
## no AWS call), and the sweep's peak memory (see bench-sweep) against Lambda's 128 MB.
bench-lambda:
	$(RELEASE_BUILD)
	@echo "== release binary (host $$(uname -m)): $$(du -k $(CARGO_TARGET_DIR)/release/ami-sweeper | cut -f1) KiB"
	@AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x AWS_EC2_METADATA_DISABLED=true \
	    $(PYTHON) scripts/measure.py "start to response, ignored event (init + one event)" 20 -- \
	    $(CARGO_TARGET_DIR)/release/ami-sweeper invoke events/imagebuilder-building.json
	@$(PYTHON) scripts/measure.py "baseline: /bin/true (process start alone)" 20 -- /bin/true

## Side by side with Cloud Custodian and aws-amicleaner (pinned, own virtualenv): same
## estate, same rule, fresh emulator per run; then each tool behind a proxy that applies
## EC2's token buckets (refill rates times THROTTLE_SCALE). Medians of BENCH_RUNS runs.
## Results and the machine they came from: BENCHMARKS.md.
PEERS ?= $(HOME)/.cache/ami-sweeper/peers
PEERS_STAMP := $(PEERS)/.c7n-0.9.53-amicleaner-0.2.2
BENCH_RUNS ?= 3
THROTTLE_SCALE ?= 1
# Milliseconds the proxy adds to every EC2 call (a modelled round trip; 0: loopback only).
THROTTLE_LATENCY_MS ?= 0
$(PEERS_STAMP):
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install --quiet --disable-pip-version-check 'c7n==0.9.53' 'aws-amicleaner==0.2.2'
	touch $@
bench: $(MOTO_STAMP) $(PEERS_STAMP)
	$(RELEASE_BUILD)
	$(PEERS)/bin/python scripts/bench.py $(CARGO_TARGET_DIR)/release/ami-sweeper $(MOTO_SERVER) \
	    $(PEERS)/bin/custodian $(PEERS)/bin/amicleaner --images 2000 --throttled-images 1000 \
	    --runs $(BENCH_RUNS) --scale $(THROTTLE_SCALE) --latency $(THROTTLE_LATENCY_MS) $(BENCH_ARGS)

## An organization beside c7n-org (pinned, in the peers' virtualenv): ORG_ACCOUNTS member
## accounts x 2 Regions on the emulator, each (account, Region) behind its own buckets at
## ORG_SHAPE of EC2's sizes and refills and ORG_LATENCY_MS per EC2 call; ami-sweeper told
## (`limits.api_share` = ORG_SHAPE) and untold (defaults: its pacers find the rate).
ORG_PEERS_STAMP := $(PEERS)/.c7n-org-0.6.52
ORG_ACCOUNTS ?= 3
ORG_IMAGES ?= 60
ORG_SHAPE ?= 0.2
ORG_LATENCY_MS ?= 60
$(ORG_PEERS_STAMP): $(PEERS_STAMP)
	$(PEERS)/bin/pip install --quiet --disable-pip-version-check 'c7n-org==0.6.52'
	touch $@
bench-org: $(MOTO_STAMP) $(ORG_PEERS_STAMP)
	$(RELEASE_BUILD)
	$(PEERS)/bin/python scripts/bench_org.py $(CARGO_TARGET_DIR)/release/ami-sweeper $(VENV)/bin/python \
	    $(PEERS)/bin/c7n-org --accounts $(ORG_ACCOUNTS) --images $(ORG_IMAGES) --shape $(ORG_SHAPE) \
	    --latency $(ORG_LATENCY_MS) $(BENCH_ARGS)

## The deployed path (`scripts/bench_fanout.py`): the release binary in Lambda mode as
## process copies under local Runtime APIs, template.yaml's functions and SQS event source
## mappings (read from the template), on bench-org's emulator and front door. Rows: (a)
## FANOUT_ACCOUNTS x 2 Regions x ORG_IMAGES, beside bench-org's CLI run of the same estate;
## (b) one pair's backlog over three shortened invocations; (c) the model. Exits non-zero
## when a row's checks fail. The binary is the one cargo reports for this build.
FANOUT_ACCOUNTS ?= 10
bench-fanout: $(MOTO_STAMP)
	@exe=$$($(CARGO) build --release --locked --bin ami-sweeper --message-format=json \
	    | $(PYTHON) -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")][-1])') \
	    && $(VENV)/bin/python scripts/bench_fanout.py $$exe $(VENV)/bin/python \
	    --accounts $(FANOUT_ACCOUNTS) --images $(ORG_IMAGES) --shape $(ORG_SHAPE) \
	    --latency $(ORG_LATENCY_MS) $(BENCH_ARGS)

clean:
	rm -rf bench-out
