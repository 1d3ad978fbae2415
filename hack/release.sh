#!/usr/bin/env bash
# The steps of the release workflow (.github/workflows/release.yaml) that can run anywhere, so
# that ci/25-release.sh runs the same code on this machine with real inputs. They act on the
# tree RELEASE_DIR (default: this clone), a commit being released.
#
#   hack/release.sh tag             the tag to release: GITHUB_REF_NAME on a tag ref
#                                   (GITHUB_REF_TYPE=tag); elsewhere only a dry run
#                                   (RELEASE_DRY_RUN=true), which releases v<chart version>
#   hack/release.sh check TAG       refuse a tag that does not release the chart (hack/releasecheck
#                                   tag: v + the chart version, appVersion and image rules) or
#                                   whose CHANGELOG.md entry is missing; print version=,
#                                   app-version=, prerelease= lines (for $GITHUB_OUTPUT)
#   hack/release.sh notes VERSION   the CHANGELOG.md entry of VERSION (the GitHub release's body)
#   hack/release.sh digest          re-pin the boxd index digest exactly as `make image-digest`
#                                   does and fail if the committed Chart.yaml pinned another one
#                                   (the index is reproducible: same commit, same digest)
#   hack/release.sh keys DIR        write the signing keyrings helm reads into DIR (secring.gpg,
#                                   pubring.gpg) and the key's name into DIR/name, from
#                                   SIGN_KEY, SIGN_KEYRING_BASE64 (`gpg --export-secret-keys |
#                                   base64 -w0`) and SIGN_PUBLIC_KEYRING_BASE64 (`gpg --export |
#                                   base64 -w0`); a dry run without them gets a throwaway key.
#                                   The key has no passphrase (helm would prompt for one).
#                                   Nothing secret is printed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RELEASE_DIR="$(cd "${RELEASE_DIR:-$REPO_ROOT}" && pwd)"
CHART="$RELEASE_DIR/charts/langbot"

dry_run() { [ "${RELEASE_DRY_RUN:-false}" = true ]; }

# releasecheck ARGS... runs hack/releasecheck of this clone, built once per call of this script.
RC_DIR=""
trap '[ -z "$RC_DIR" ] || rm -rf "$RC_DIR"' EXIT
build_releasecheck() {
  RC_DIR="$(mktemp -d)"
  (cd "$REPO_ROOT" && go build -o "$RC_DIR/releasecheck" ./hack/releasecheck) || die "could not build hack/releasecheck"
}
releasecheck() { "$RC_DIR/releasecheck" "$@"; }

chart_version() { sed -n 's/^version: *//p' "$CHART/Chart.yaml"; }

tag() {
  local t
  if [ "${GITHUB_REF_TYPE:-}" = tag ]; then
    t="${GITHUB_REF_NAME:-}"
  elif dry_run; then
    t="v$(chart_version)"
  else
    die "ref '${GITHUB_REF_NAME:-}' (${GITHUB_REF_TYPE:-no ref type}) is not a tag: a release that publishes runs on a tag v<chart version>; run the workflow on a branch only with dry-run"
  fi
  # Later steps pass the tag to make and gh: only a version's characters get that far (the
  # full rules are hack/releasecheck's).
  [[ "$t" =~ ^v[0-9A-Za-z.+-]+$ ]] || die "tag '$t': a release tag is v<chart version> (letters, digits, '.', '-' only)"
  echo "$t"
}

check() {
  [ -n "${1:-}" ] || die "usage: hack/release.sh check TAG (e.g. v$(chart_version))"
  local out version
  build_releasecheck
  out="$(releasecheck tag -tag "$1" -chart "$CHART")" || die "tag $1 does not release $CHART (above)"
  version="$(sed -n 's/^version=//p' <<<"$out")"
  releasecheck notes -version "$version" -changelog "$RELEASE_DIR/CHANGELOG.md" >/dev/null \
    || die "no release notes for $version in $RELEASE_DIR/CHANGELOG.md (above)"
  echo "$out"
}

notes() {
  [ -n "${1:-}" ] || die "usage: hack/release.sh notes VERSION (e.g. $(chart_version))"
  build_releasecheck
  releasecheck notes -version "$1" -changelog "$RELEASE_DIR/CHANGELOG.md"
}

pinned_digest() { git -C "$RELEASE_DIR" show "HEAD:charts/langbot/Chart.yaml" | sed -n 's/.*image: ghcr.io\/langbot-k8s\/boxd:[^@]*@\(sha256:[0-9a-f]*\).*/\1/p'; }

digest() {
  local file=charts/langbot/Chart.yaml
  git -C "$RELEASE_DIR" diff --quiet HEAD -- "$file" \
    || die "$RELEASE_DIR/$file differs from its commit: the check compares the committed pin; commit or restore it first"
  local committed; committed="$(pinned_digest)"
  make -s -C "$RELEASE_DIR" image-digest
  if ! git -C "$RELEASE_DIR" diff --quiet HEAD -- "$file"; then
    git -C "$RELEASE_DIR" diff HEAD -- "$file" >&2
    local built; built="$(sed -n 's/.*image: ghcr.io\/langbot-k8s\/boxd:[^@]*@\(sha256:[0-9a-f]*\).*/\1/p' "$RELEASE_DIR/$file")"
    die "the committed $file pins boxd ${committed:-<no digest>} but this commit builds $built: run \`make image-digest\` after the boxd/, go.mod or go.sum commit and commit Chart.yaml (if nothing changed there, the build is not reproducible: check the Go toolchain against go.mod's go line)"
  fi
  log "the committed Chart.yaml pins the boxd index this commit builds: $committed"
}

keys() {
  local dir="${1:-}"
  [ -n "$dir" ] || die "usage: hack/release.sh keys DIR"
  mkdir -p "$dir" && chmod 700 "$dir"
  if [ -z "${SIGN_KEYRING_BASE64:-}" ] && [ -z "${SIGN_PUBLIC_KEYRING_BASE64:-}" ] && [ -z "${SIGN_KEY:-}" ] && dry_run; then
    log "dry run without signing secrets: signing with a throwaway key"
    local home; home="$(mktemp -d)"
    local uid="langbot-k8s dry-run release <dry-run@langbot-k8s.invalid>"
    gpg --batch --quiet --homedir "$home" --passphrase '' --quick-gen-key "$uid" rsa3072 sign never 2>/dev/null \
      || die "gpg could not make a throwaway key (is gnupg installed?)"
    (umask 077 && gpg --batch --homedir "$home" --export-secret-keys > "$dir/secring.gpg")
    gpg --batch --homedir "$home" --export > "$dir/pubring.gpg"
    printf '%s\n' "$uid" > "$dir/name"
    gpgconf --homedir "$home" --kill gpg-agent 2>/dev/null || true
    rm -rf "$home"
    return 0
  fi
  [ -n "${SIGN_KEY:-}" ] || die "SIGN_KEY is empty: set the repository secret SIGN_KEY to the signing key's uid name or email"
  [ -n "${SIGN_KEYRING_BASE64:-}" ] || die "SIGN_KEYRING_BASE64 is empty: set the repository secret SIGN_KEYRING to \`gpg --export-secret-keys <key> | base64 -w0\`"
  [ -n "${SIGN_PUBLIC_KEYRING_BASE64:-}" ] || die "SIGN_PUBLIC_KEYRING_BASE64 is empty: set the repository variable SIGN_PUBLIC_KEYRING to \`gpg --export <key> | base64 -w0\`"
  (umask 077 && printf '%s' "$SIGN_KEYRING_BASE64" | base64 -d > "$dir/secring.gpg" 2>/dev/null) \
    || die "SIGN_KEYRING_BASE64 is not base64: set the secret to \`gpg --export-secret-keys <key> | base64 -w0\`"
  printf '%s' "$SIGN_PUBLIC_KEYRING_BASE64" | base64 -d > "$dir/pubring.gpg" 2>/dev/null \
    || die "SIGN_PUBLIC_KEYRING_BASE64 is not base64: set the variable to \`gpg --export <key> | base64 -w0\`"
  (umask 077 && printf '%s\n' "$SIGN_KEY" > "$dir/name")
  [ -s "$dir/secring.gpg" ] && [ -s "$dir/pubring.gpg" ] || die "a signing keyring decoded to nothing: check SIGN_KEYRING and SIGN_PUBLIC_KEYRING"
  # helm (3.21 and 4.3) asks for a key's passphrase on the terminal unless given
  # --passphrase-file, which hack/package.sh does not pass: a protected key cannot sign here.
  local home; home="$(mktemp -d)"
  if gpg --batch --homedir "$home" --list-packets "$dir/secring.gpg" 2>/dev/null | grep -q '^[[:space:]]*skey\[[0-9]*\]: \[.*protected\]'; then
    rm -rf "$home"
    die "the SIGN_KEYRING key is passphrase-protected and helm would prompt for it: store a release signing key without a passphrase in the secret (gpg --passwd on a copy of the key, set to empty)"
  fi
  rm -rf "$home"
}

case "${1:-}" in
  tag) tag ;;
  check) check "${2:-}" ;;
  notes) notes "${2:-}" ;;
  digest) digest ;;
  keys) keys "${2:-}" ;;
  *) die "usage: hack/release.sh tag|check TAG|notes VERSION|digest|keys DIR" ;;
esac
