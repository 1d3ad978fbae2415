# langbot-k8s: the LangBot Helm chart, its Go toolchain and boxd.
# `make demo` is the main job; `make test` runs every test (what CI runs).
SHELL := /bin/bash
.DEFAULT_GOAL := help
GO ?= go

.PHONY: help
help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

.PHONY: demo
demo: ## main job: render + validate the chart for a realistic values stack (and install it on the local cluster)
	bash hack/demo.sh

.PHONY: test
test: ## every test: unit, chart, boxd against a real Docker Engine, end to end on a real cluster
	bash ci/test.sh

.PHONY: test-unit
test-unit: ## Go unit tests that need no daemon
	bash ci/10-unit.sh

.PHONY: test-chart
test-chart: ## helm lint, helm template per ci/ scenario, helm-unittest, schema drift
	bash ci/20-chart.sh

.PHONY: test-boxd
test-boxd: ## boxd integration + conformance against a private Docker Engine
	bash ci/30-boxd.sh

.PHONY: test-e2e
test-e2e: ## helm install on the local Kubernetes cluster
	bash ci/40-e2e.sh

.PHONY: tools
tools: ## build pinned helm and helm-unittest into the tools cache
	bash hack/tools.sh all

.PHONY: schema
schema: ## regenerate charts/langbot/values.schema.json from schemas/
	$(GO) run ./cmd/schemagen

.PHONY: golden
golden: ## update golden files
	$(GO) test ./pkg/... ./cmd/... -update

.PHONY: docker-up docker-down
docker-up: ## start the private Docker Engine
	bash hack/docker.sh up
docker-down: ## stop the private Docker Engine
	bash hack/docker.sh down

.PHONY: image
image: ## build the boxd image FROM scratch against the private Docker Engine
	bash hack/image.sh

.PHONY: package
package: ## chart archive + provenance into dist/ (SIGN_KEY, SIGN_KEYRING: see hack/package.sh)
	bash hack/package.sh $(PACKAGE_DIR)

.PHONY: image-multiarch image-digest test-release
image-multiarch: ## build the boxd index (linux/amd64+arm64) of the committed sources, push it to the test registry
	bash hack/registry.sh up && eval "$$(bash hack/registry.sh env)" && $(GO) run ./cmd/boximage -push
image-digest: ## pin the boxd index digest in Chart.yaml's artifacthub.io/images (after a boxd/ or go.mod commit)
	$(GO) run ./cmd/boximage -sync-chart
test-release: ## release artifacts against a real OCI registry: multi-arch boxd index, signed OCI chart (both helms)
	bash ci/25-release.sh

# The release workflow (.github/workflows/release.yaml) runs these; so does ci/25-release.sh.
.PHONY: release-check release-notes release-digest
release-check: ## refuse TAG=v<version> unless it releases the chart and CHANGELOG.md has its entry
	@bash hack/release.sh check "$(TAG)"
release-notes: ## print the CHANGELOG.md entry of VERSION=<chart version> (a GitHub release's body)
	@bash hack/release.sh notes "$(VERSION)"
release-digest: ## re-pin the boxd index digest as image-digest does; fail if the committed pin differs
	bash hack/release.sh digest

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each (default 30s)
	bash hack/fuzz.sh $(FUZZTIME)

.PHONY: bench
bench: ## boxd vs raw Docker API benchmark tables
	bash hack/bench.sh

.PHONY: bench-compare
bench-compare: ## compare two bench JSON files: make bench-compare OLD=a.json NEW=b.json
	$(GO) run ./boxd/cmd/boxbench compare $(OLD) $(NEW)

.PHONY: cluster-up cluster-down
cluster-up: ## start the local Kubernetes cluster (real node + kwok pools)
	bash hack/cluster.sh up
cluster-down: ## tear the local cluster down
	bash hack/cluster.sh down
