#!/usr/bin/env bash
# Creates a self-signed development certificate for edge: ECDSA P-256,
# SAN localhost, 127.0.0.1 and ::1, valid 365 days. Keys are git-ignored.
#   scripts/gen-certs.sh [DIR]      (default: certs/; keeps existing files)
set -euo pipefail
dir=${1:-certs}
crt=$dir/server.crt key=$dir/server.key
if [[ -s $crt && -s $key ]]; then exit 0; fi
mkdir -p "$dir"
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$key" -out "$crt" -days 365 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
  -addext "keyUsage=digitalSignature" -addext "extendedKeyUsage=serverAuth" 2>/dev/null
chmod 644 "$crt"
echo "gen-certs: wrote $crt and $key"
