#!/bin/sh
# Makes a client certificate signed by the CA in DIR: DIR/NAME.key (0600), DIR/NAME.crt (397 days) and, for
# browsers and tools that import one file, DIR/NAME.p12 (no password unless P12_PASSWORD is set). Used for
# mutual TLS: another cloudlet (migration), libvirt clients, or an operator's browser on a listener with
# tls_client_certs. cloudletd authorises a client by the certificate's SHA-256 fingerprint, printed here.
# Usage: tls/make-client-cert.sh DIR NAME
set -eu
# Idempotent: a certificate that exists, was signed by this CA and has more than 30 days left is kept; set
# RENEW=1 to make a new one anyway.
[ $# -eq 2 ] || { echo "usage: $0 DIR NAME" >&2; exit 2; }
dir=$1
name=$2
[ -f "$dir/ca.key" ] || { echo "no CA in $dir (tls/make-ca.sh $dir)" >&2; exit 1; }
case $name in *[!A-Za-z0-9._-]*|'') echo "NAME: letters, digits, dots, dashes and underscores only" >&2; exit 2;; esac
if [ "${RENEW:-0}" != 1 ] && [ -f "$dir/$name.crt" ] && [ -f "$dir/$name.key" ] &&
   openssl verify -CAfile "$dir/ca.crt" "$dir/$name.crt" >/dev/null 2>&1 &&
   openssl x509 -in "$dir/$name.crt" -noout -checkend 2592000 >/dev/null; then
  fp=$(openssl x509 -in "$dir/$name.crt" -outform DER | openssl dgst -sha256 -r | cut -d' ' -f1)
  echo "$dir/$name.crt: kept (RENEW=1 makes a new one): SHA-256 $fp"
  exit 0
fi
umask 077
openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$name.key"
openssl req -new -key "$dir/$name.key" -subj "/O=cloudletd/CN=$name" -out "$dir/$name.csr"
ext=$(mktemp)
trap 'rm -f "$ext" "$dir/$name.csr"' EXIT
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' > "$ext"
openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -sha256 -days 397 \
  -extfile "$ext" -out "$dir/$name.crt" 2>/dev/null
openssl pkcs12 -export -inkey "$dir/$name.key" -in "$dir/$name.crt" -name "$name" \
  -passout "pass:${P12_PASSWORD:-}" -out "$dir/$name.p12"
chmod 644 "$dir/$name.crt"
fp=$(openssl x509 -in "$dir/$name.crt" -outform DER | openssl dgst -sha256 -r | cut -d' ' -f1)
echo "$dir/$name.crt: SHA-256 $fp"
