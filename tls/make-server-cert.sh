#!/bin/sh
# Makes a server certificate signed by the CA in DIR: DIR/NAME.key (0600) and DIR/NAME.crt (397 days), for a
# cloudlet's manager listener (listeners.manager.tls_cert / tls_key), its peer listener, or libvirt's TLS.
# Usage: tls/make-server-cert.sh DIR NAME [DNS name or IP address]...
# NAME is also the first DNS name; add every name and address browsers and peers use to reach the cloudlet.
set -eu
. "$(dirname "$0")/lib.sh"
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
cert_kept "$dir" "$name" && exit 0
cert_sign "$dir" "$name" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$san
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid"
echo "$dir/$name.crt ($san): $(openssl x509 -in "$dir/$name.crt" -noout -fingerprint -sha256)"
