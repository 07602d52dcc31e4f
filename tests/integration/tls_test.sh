#!/usr/bin/env bash
# With --tls_cert/--tls_key the server speaks TLS only: a client trusting the certificate streams
# frames, a plaintext client is refused. The certificate is made here with openssl.
#   tls_test.sh <build dir>
build=$1
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost" -keyout "$work/key.pem" -out "$work/cert.pem" \
  >"$work/openssl.log" 2>&1 || fail "openssl could not make a certificate"
start_server "$build" --tls_cert="$work/cert.pem" --tls_key="$work/key.pem"

client=("$build/client/streamkv-client" --server="localhost:$grpc_port" --frames=3
        --size=56x112 --out= --quiet)
"${client[@]}" --tls_ca="$work/cert.pem" >"$work/tls-client.log" 2>&1 ||
  fail "a client trusting the certificate could not stream"
grep -q "3 results, 0 errors" "$work/tls-client.log" || fail "unexpected client summary"
if "${client[@]}" >"$work/plain-client.log" 2>&1; then
  fail "a plaintext client was served by a TLS server"
fi
echo "TLS: trusted client streamed 3 frames; plaintext client refused"
