#!/usr/bin/env bash
# Makes the test TLS material used by pgdog's tests: a CA, a server
# certificate for localhost and 127.0.0.1 signed by it, a client certificate,
# and a second CA that signed nothing (for "unknown CA" tests).
# Outputs are committed; rerun only to renew them (valid for 100 years).
set -euo pipefail
cd "$(dirname "$0")"
days=36500

ec_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

ec_key ca.key
openssl req -x509 -new -key ca.key -sha256 -days "$days" -subj "/CN=pgdog test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.pem

ec_key other-ca.key
openssl req -x509 -new -key other-ca.key -sha256 -days "$days" -subj "/CN=pgdog unrelated CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out other-ca.pem
rm other-ca.key

sign() { # name, subject, extensions
  ec_key "$1.key"
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days "$days" \
    -extfile <(printf '%s\n' "$3") -out "$1.pem"
  rm "$1.csr"
}

sign server "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth"
sign client "/CN=pgdog" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
rm -f ca.srl
chmod 600 ./*.key
echo "wrote $(ls)"
