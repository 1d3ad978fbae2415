#!/usr/bin/env bash
# Packages charts/langbot with its provenance file (`helm package --sign`): OUT_DIR (default
# dist/) gets langbot-<version>.tgz and langbot-<version>.tgz.prov, what `helm push` uploads to an
# OCI registry and `helm install --verify` checks against the signer's public keyring.
#
#   SIGN_KEY=<name or email> SIGN_KEYRING=<secret keyring> hack/package.sh [OUT_DIR]
#
# SIGN_KEYRING is a secret keyring in the legacy format helm reads (GnuPG 2:
# `gpg --export-secret-keys > secring.gpg`); a passphrase comes from HELM_KEY_PASSPHRASE.
# HELM picks the helm binary (default: the pinned Helm 3; both majors sign the same way).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
OUT="${1:-dist}"
[ -n "${SIGN_KEY:-}" ] || die "SIGN_KEY is empty: name the signing key (its uid name or email), e.g. SIGN_KEY='LangBot K8s release'"
[ -f "${SIGN_KEYRING:-}" ] || die "SIGN_KEYRING='${SIGN_KEYRING:-}' is not a file: export the secret key with \`gpg --export-secret-keys > secring.gpg\`"
HELM="${HELM:-$(bash hack/tools.sh helm)}"
mkdir -p "$OUT"
"$HELM" package --sign --key "$SIGN_KEY" --keyring "$SIGN_KEYRING" charts/langbot -d "$OUT" >&2
version="$(sed -n 's/^version: *//p' charts/langbot/Chart.yaml)"
[ -f "$OUT/langbot-$version.tgz.prov" ] || die "helm package wrote no $OUT/langbot-$version.tgz.prov"
echo "$OUT/langbot-$version.tgz"
