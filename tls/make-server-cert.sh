#!/bin/sh
# Makes a server certificate signed by the CA in DIR: DIR/NAME.key (0600) and DIR/NAME.crt (397 days), for a
# cloudlet's manager listener (listeners.manager.tls_cert / tls_key), its peer listener, or libvirt's TLS.
# Usage: tls/make-server-cert.sh DIR NAME [DNS name or IP address]...
# NAME is also the first DNS name; add every name and address browsers and peers use to reach the cloudlet.
set -eu
# Idempotent: a certificate that exists, was signed by this CA and has more than 30 days left is kept; set
# RENEW=1 to make a new one anyway.
[ $# -ge 2 ] || { echo "usage: $0 DIR NAME [DNS-or-IP]..." >&2; exit 2; }
dir=$1
name=$2
shift 2
[ -f "$dir/ca.key" ] || { echo "no CA in $dir (tls/make-ca.sh $dir)" >&2; exit 1; }
case $name in *[!A-Za-z0-9.-]*|'') echo "NAME: letters, digits, dots and dashes only" >&2; exit 2;; esac
san="DNS:$name"
for alt in "$@"; do
  case $alt in
    *[!0-9A-Fa-f:]*:*|'') echo "bad address: $alt" >&2; exit 2 ;;
    *:*) san="$san,IP:$alt" ;;                     # IPv6
    *[!0-9.]*) case $alt in *[!A-Za-z0-9.-]*) echo "bad name: $alt" >&2; exit 2;; esac; san="$san,DNS:$alt" ;;
    *) san="$san,IP:$alt" ;;                       # IPv4
  esac
done
if [ "${RENEW:-0}" != 1 ] && [ -f "$dir/$name.crt" ] && [ -f "$dir/$name.key" ] &&
   openssl verify -CAfile "$dir/ca.crt" "$dir/$name.crt" >/dev/null 2>&1 &&
   openssl x509 -in "$dir/$name.crt" -noout -checkend 2592000 >/dev/null; then
  echo "$dir/$name.crt: kept (RENEW=1 makes a new one)"
  exit 0
fi
umask 077
openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$name.key"
openssl req -new -key "$dir/$name.key" -subj "/O=cloudletd/CN=$name" -out "$dir/$name.csr"
ext=$(mktemp)
trap 'rm -f "$ext" "$dir/$name.csr"' EXIT
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=%s\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' "$san" > "$ext"
openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -sha256 -days 397 \
  -extfile "$ext" -out "$dir/$name.crt" 2>/dev/null
chmod 644 "$dir/$name.crt"
echo "$dir/$name.crt ($san): $(openssl x509 -in "$dir/$name.crt" -noout -fingerprint -sha256)"
