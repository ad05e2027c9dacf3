# The two commands of the README, and the checks CI runs.
.PHONY: run test bench plugins check fmt clippy crds deploy-plugins fuzz

run:
	./scripts/run-local.sh

test:
	./scripts/test.sh

# Release-build benchmarks against a local etcd; writes bench/RESULTS.md.
bench:
	./scripts/bench.sh

plugins:
	./scripts/build-plugins.sh

check: fmt clippy

fmt:
	cargo fmt --all -- --check

clippy:
	./scripts/setup.sh
	cargo clippy --all-targets -- -D warnings
	cargo clippy --target wasm32-wasip2 -p etcd-inspector-sdk -p healthy -p alarm -p consistency -p request -p db-quota -p spin -p greedy -p membomb -p panicker -p noop -p wit-next -p wit-patch -- -D warnings

# Regenerates deploy/crds.yaml from the Rust types (a test fails when it drifts).
crds:
	cargo run --quiet -p etcd-inspector -- crd > deploy/crds.yaml

# Puts the bundled plugins where deploy/kustomization.yaml expects them.
deploy-plugins: plugins
	mkdir -p deploy/plugins
	cp "$${CARGO_TARGET_DIR:-target}"/plugins/bundled/*.wasm deploy/plugins/

# Fuzzes what comes from outside (manifests, settings, plugin bytes) for
# FUZZ_SECONDS each (default 60); not part of CI. Needs cargo-fuzz.
fuzz:
	./scripts/fuzz.sh
