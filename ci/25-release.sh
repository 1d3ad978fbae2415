#!/usr/bin/env bash
# What a release ships, against a real OCI registry (hack/registry.sh: Debian's docker-registry
# with TLS and htpasswd on loopback): the boxd image index for linux/amd64 + linux/arm64 built from
# the committed sources, pushed and read back (both manifests, architectures, labels, the amd64
# boxd run here, anonymous pulls refused, the digest pinned in Chart.yaml), and the chart packaged
# with provenance (`make package`, a key made by the test), pushed with Helm 3 and Helm 4 and
# installed from oci:// with --verify; a changed archive and a stranger's signature are refused.
# Tests carry the build tag `release` (test/release).
# Before them, the release workflow: actionlint (with Debian's shellcheck on the run: scripts)
# passes on .github/workflows/*.yaml and fails on a broken workflow; release.yaml pins every
# action by commit; and its local steps (hack/release.sh: the tag, the tag and CHANGELOG.md
# rules, the boxd digest check, the signing keyrings) run on a scratch clone of HEAD with real
# inputs: what they must accept is accepted, what they must refuse is refused with its reason.
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"
cd "$REPO_ROOT"
need_apt gnupg shellcheck
mkdir -p "$STATE_DIR/results"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
n=0

# ok DESC CMD... : CMD succeeds. refused DESC PATTERN CMD... : CMD fails and says PATTERN.
# said LINE : the last command's output has the line LINE.
ok() {
  local desc="$1"; shift
  "$@" > "$scratch/out" 2>&1 || { cat "$scratch/out" >&2; die "$desc: failed"; }
  n=$((n + 1))
}
refused() {
  local desc="$1" pattern="$2"; shift 2
  if "$@" > "$scratch/out" 2>&1; then cat "$scratch/out" >&2; die "$desc: accepted"; fi
  grep -qF -- "$pattern" "$scratch/out" || { cat "$scratch/out" >&2; die "$desc: refused, but without '$pattern'"; }
  n=$((n + 1))
}
said() { grep -qxF -- "$1" "$scratch/out" || { cat "$scratch/out" >&2; die "expected the line '$1' in the output above"; }; }

# --- the workflows: actionlint, and a workflow it must refuse
ACTIONLINT="$(bash hack/tools.sh actionlint)"
lint() { "$ACTIONLINT" -no-color -pyflakes= -shellcheck="$(command -v shellcheck)" "$@"; }
log "actionlint $("$ACTIONLINT" -version | head -1), $(shellcheck --version | sed -n 's/^version: /shellcheck /p')"
ok "actionlint on .github/workflows" lint .github/workflows/*.yaml
mkdir -p "$scratch/bad"
cat > "$scratch/bad/broken.yaml" <<'EOF'
name: broken
on:
  push:
    tagz: ["v*"]
permissions:
  contents: wrote
jobs:
  release:
    runs-on: ubuntu-24.04
    steps:
      - run: echo ${{ github.event.head_commit.message }} $NOTES
      - run: echo "${{ needs.build.outputs.digest }}"
EOF
for rule in '"tagz" for "push" section' '[permissions]' 'potentially untrusted' 'SC2086' 'property "build" is not defined'; do
  refused "actionlint on a broken workflow" "$rule" lint "$scratch/bad/broken.yaml"
done
# Least privilege and pinned actions in the release workflow: no action by a movable tag, no
# permission for the workflow as a whole, every job naming its own.
wf=.github/workflows/release.yaml
grep -qE '^\s*(- )?uses: ' "$wf" || die "$wf uses no action: the pin check below would check nothing"
unpinned="$(grep -nE '^\s*(- )?uses: ' "$wf" | grep -vE '@[0-9a-f]{40} # v[0-9.]+$' || true)"
[ -z "$unpinned" ] || die "$wf: pin these actions by commit (uses: owner/action@<40-hex sha> # vX.Y.Z): $unpinned"
n=$((n + 1))
grep -qx 'permissions: {}' "$wf" || die "$wf: the workflow-level permissions must be {} (each job asks for its own)"
jobs_without="$(awk '/^jobs:/ {j = 1; next} j && /^  [a-z][a-z0-9_-]*:$/ {if (name && !p) print name; name = $1; p = 0}
  j && /^    permissions:/ {p = 1} END {if (name && !p) print name}' "$wf")"
[ -z "$jobs_without" ] || die "$wf: these jobs name no permissions of their own: $jobs_without"
n=$((n + 2))
log "actionlint + shellcheck: the workflows pass, a broken one is refused; release.yaml pins its actions"

# --- the release steps on a scratch clone of HEAD (this tree's hack/release.sh, that tree's files)
clone="$scratch/clone"
git clone -q --no-checkout "$REPO_ROOT" "$clone"
git -C "$clone" checkout -q --detach "$(git rev-parse HEAD)"
gitc() { git -C "$clone" -c user.name=ci -c user.email=ci@langbot-k8s.invalid "$@"; }
rel=(env RELEASE_DIR="$clone" bash hack/release.sh)
version="$(sed -n 's/^version: *//p' "$clone/charts/langbot/Chart.yaml")"

ok "the tag of a tag ref" env GITHUB_REF_TYPE=tag GITHUB_REF_NAME="v$version" "${rel[@]}" tag
said "v$version"
ok "a dry run off a tag releases v<chart version>" env GITHUB_REF_TYPE=branch GITHUB_REF_NAME=main RELEASE_DRY_RUN=true "${rel[@]}" tag
said "v$version"
refused "a publishing run off a tag" "is not a tag" env GITHUB_REF_TYPE=branch GITHUB_REF_NAME=main RELEASE_DRY_RUN=false "${rel[@]}" tag
refused "a tag that could inject into a command" "a release tag is v<chart version>" env GITHUB_REF_TYPE=tag GITHUB_REF_NAME='v1$(id)' "${rel[@]}" tag

ok "tag v$version releases the chart" "${rel[@]}" check "v$version"
said "version=$version"
refused "a tag of another version" "does not release Chart.yaml version" "${rel[@]}" check "v$version-other.1"
refused "a tag without v" "+ a SemVer 2 version without build metadata" "${rel[@]}" check "$version"
ok "the notes of $version" "${rel[@]}" notes "$version"
said "### Upgrading"
! grep -q '^## ' "$scratch/out" || { cat "$scratch/out"; die "the notes of $version hold more than its entry"; }
sed -i "/^## \[\?$version\]\?\( .*\)\?$/d" "$clone/CHANGELOG.md"
refused "a tag whose CHANGELOG.md entry is missing" "entry: move the Unreleased notes under" "${rel[@]}" check "v$version"
refused "notes of a version without an entry" "entry: move the Unreleased notes under" "${rel[@]}" notes "$version"
git -C "$clone" checkout -q -- CHANGELOG.md

# The digest check re-pins as `make image-digest` does: a wrong committed pin is refused (and
# the script leaves the built pin, which committed makes the check pass); a changed Chart.yaml
# that is not committed is refused before anything is built.
sed -i "s|\(image: ghcr.io/langbot-k8s/boxd:[^@]*@\)sha256:[0-9a-f]*|\1sha256:$(printf '0%.0s' {1..64})|" "$clone/charts/langbot/Chart.yaml"
refused "Chart.yaml changed but not committed" "differs from its commit" "${rel[@]}" digest
gitc commit -qam "a wrong boxd pin"
refused "a committed pin the commit does not build" "pins boxd sha256:0000000000000000000000000000000000000000000000000000000000000000 but this commit builds sha256:" "${rel[@]}" digest
gitc commit -qam "the pin make image-digest wrote"
ok "the pin of the commit" "${rel[@]}" digest

# Signing keyrings: the throwaway key of a dry run signs a chart helm verifies; the secrets'
# base64 keyrings are decoded as they are; missing or passphrase-protected keys are refused.
ok "a dry run's throwaway key" env RELEASE_DRY_RUN=true SIGN_KEY= SIGN_KEYRING_BASE64= SIGN_PUBLIC_KEYRING_BASE64= "${rel[@]}" keys "$scratch/keys"
ok "make package with the dry run's key" env SIGN_KEY="$(cat "$scratch/keys/name")" SIGN_KEYRING="$scratch/keys/secring.gpg" \
  make -s -C "$clone" package PACKAGE_DIR="$scratch/dist"
ok "helm verify with the dry run's public keyring" "$(bash hack/tools.sh helm)" verify "$scratch/dist/langbot-$version.tgz" --keyring "$scratch/keys/pubring.gpg"
refused "a publishing run without signing secrets" "SIGN_KEY is empty" env RELEASE_DRY_RUN=false SIGN_KEY= SIGN_KEYRING_BASE64= SIGN_PUBLIC_KEYRING_BASE64= "${rel[@]}" keys "$scratch/k1"
ok "keyrings from the secrets" env SIGN_KEY="$(cat "$scratch/keys/name")" SIGN_KEYRING_BASE64="$(base64 -w0 "$scratch/keys/secring.gpg")" \
  SIGN_PUBLIC_KEYRING_BASE64="$(base64 -w0 "$scratch/keys/pubring.gpg")" "${rel[@]}" keys "$scratch/k2"
cmp -s "$scratch/keys/secring.gpg" "$scratch/k2/secring.gpg" && cmp -s "$scratch/keys/pubring.gpg" "$scratch/k2/pubring.gpg" \
  || die "keys: the keyrings decoded from the secrets differ from the ones encoded"
refused "a public keyring that is not base64" "SIGN_PUBLIC_KEYRING_BASE64 is not base64" env SIGN_KEY=x \
  SIGN_KEYRING_BASE64="$(base64 -w0 "$scratch/keys/secring.gpg")" SIGN_PUBLIC_KEYRING_BASE64='%not base64%' "${rel[@]}" keys "$scratch/k3"
gh="$scratch/gnupg" && mkdir -m 700 "$gh"
gpg --batch --quiet --homedir "$gh" --pinentry-mode loopback --passphrase secret --quick-gen-key "protected <p@langbot-k8s.invalid>" rsa3072 sign never 2>/dev/null
refused "a passphrase-protected key (helm would prompt)" "passphrase-protected" env SIGN_KEY=protected \
  SIGN_KEYRING_BASE64="$(gpg --batch --homedir "$gh" --pinentry-mode loopback --passphrase secret --export-secret-keys | base64 -w0)" \
  SIGN_PUBLIC_KEYRING_BASE64="$(gpg --batch --homedir "$gh" --export | base64 -w0)" "${rel[@]}" keys "$scratch/k4"
gpgconf --homedir "$gh" --kill gpg-agent 2>/dev/null || true
log "release steps on a scratch clone: tag, rules, notes, digest and keys accept and refuse as they must"
echo "release-workflow $n 0" >> "$STATE_DIR/results/counts"
log "release workflow: $n checks passed"

# --- the release artifacts against the registry
bash hack/registry.sh up
report="$STATE_DIR/results/release.json"
set +e
go test -count=1 -p 1 -tags release -json ./test/release/ > "$report"
rc=$?
set -e
RESULTS_LABEL=release go run ./hack/gotestsum-lite < "$report"
[ $rc -eq 0 ] || die "release tests failed (report: $report); a stale boxd digest in Chart.yaml is fixed by \`make image-digest\`"
