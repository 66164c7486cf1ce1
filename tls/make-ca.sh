#!/bin/sh
# Makes a certificate authority for one cloudlet site: DIR/ca.key (0600) and DIR/ca.crt (10 years).
# Usage: tls/make-ca.sh DIR [NAME]
# Keep ca.key offline if you can: whoever holds it can make certificates every cloudlet of the site trusts.
# Idempotent: an existing CA is kept (never replaced: everything it signed would stop being trusted).
set -eu
[ $# -ge 1 ] || { echo "usage: $0 DIR [NAME]" >&2; exit 2; }
dir=$1
name=${2:-cloudlet CA}
mkdir -p "$dir"
chmod 700 "$dir"
if [ -e "$dir/ca.key" ]; then
  echo "$dir/ca.crt: kept (a CA is never replaced): $(openssl x509 -in "$dir/ca.crt" -noout -fingerprint -sha256)"
  exit 0
fi
umask 077
openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/ca.key"
openssl req -new -x509 -key "$dir/ca.key" -sha256 -days 3650 -subj "/O=cloudletd/CN=$name" \
  -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -addext "subjectKeyIdentifier=hash" -out "$dir/ca.crt"
chmod 644 "$dir/ca.crt"
echo "$dir/ca.crt: $(openssl x509 -in "$dir/ca.crt" -noout -fingerprint -sha256)"
