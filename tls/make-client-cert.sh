#!/bin/sh
# Makes a client certificate signed by the CA in DIR: DIR/NAME.key (0600), DIR/NAME.crt (397 days) and, for
# browsers and tools that import one file, DIR/NAME.p12 (no password unless P12_PASSWORD is set). Used for
# mutual TLS: another cloudlet (migration), libvirt clients, or an operator's browser on a listener with
# tls_client_certs. cloudletd authorises a client by the certificate's SHA-256 fingerprint, printed here.
# Usage: tls/make-client-cert.sh DIR NAME
set -eu
. "$(dirname "$0")/lib.sh"
# Idempotent: a certificate that exists, was signed by this CA and has more than 30 days left is kept; set
# RENEW=1 to make a new one anyway.
[ $# -eq 2 ] || { echo "usage: $0 DIR NAME" >&2; exit 2; }
dir=$1
name=$2
[ -f "$dir/ca.key" ] || { echo "no CA in $dir (tls/make-ca.sh $dir)" >&2; exit 1; }
case $name in *[!A-Za-z0-9._-]*|'') echo "NAME: letters, digits, dots, dashes and underscores only" >&2; exit 2;; esac
if ! cert_kept "$dir" "$name"; then
  cert_sign "$dir" "$name" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid"
  ( umask 077 && openssl pkcs12 -export -inkey "$dir/$name.key" -in "$dir/$name.crt" -name "$name" \
      -passout "pass:${P12_PASSWORD:-}" -out "$dir/$name.p12" )
fi
fp=$(openssl x509 -in "$dir/$name.crt" -outform DER | openssl dgst -sha256 -r | cut -d' ' -f1)
echo "$dir/$name.crt: SHA-256 $fp"
