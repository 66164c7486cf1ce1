# Shared by make-server-cert.sh and make-client-cert.sh (sourced): keep a valid certificate, or make and sign one.

# True (and says so) when DIR/NAME.crt and its key exist, the CA in DIR signed it and it has more than 30 days
# left; RENEW=1 makes it false.
cert_kept() {
  [ "${RENEW:-0}" != 1 ] && [ -f "$1/$2.crt" ] && [ -f "$1/$2.key" ] &&
    openssl verify -CAfile "$1/ca.crt" "$1/$2.crt" >/dev/null 2>&1 &&
    openssl x509 -in "$1/$2.crt" -noout -checkend 2592000 >/dev/null &&
    echo "$1/$2.crt: kept (RENEW=1 makes a new one)"
}

# cert_sign DIR NAME EXTENSIONS: a new P-256 key DIR/NAME.key (0600) and DIR/NAME.crt (CN=NAME, 397 days) signed
# by the CA in DIR, with EXTENSIONS (x509v3 config lines).
cert_sign() {
  local dir=$1 name=$2 ext
  ( umask 077 && openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$name.key" )
  openssl req -new -key "$dir/$name.key" -subj "/O=cloudletd/CN=$name" -out "$dir/$name.csr"
  ext=$(mktemp)
  printf '%s\n' "$3" > "$ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -sha256 -days 397 \
    -extfile "$ext" -out "$dir/$name.crt" 2>/dev/null || { rm -f "$ext" "$dir/$name.csr"; return 1; }
  rm -f "$ext" "$dir/$name.csr"
  chmod 644 "$dir/$name.crt"
}
