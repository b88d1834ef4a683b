#!/usr/bin/env bash
# Makes the client CA — the CA every unibus client pins with --ca — and a
# server certificate for this host, valid for both planes (HTTPS control
# plane and TLS data plane). The cluster scripts sign each node's
# data-plane certificate with the same CA (cluster/generate-cluster-certs.sh).
#
#   deploy/tls/generate-certs.sh                      # into deploy/tls/out/
#   deploy/tls/generate-certs.sh --san bus.example.org --san 203.0.113.7
#
# Writes (keys 0600):
#   out/ca.crt      the client CA certificate: give it to every client (--ca)
#   out/ca.key      its key: keep it on this machine, offline if you can
#   out/server.crt  this host's certificate, signed by the CA
#   out/server.key
#
# The server certificate names 127.0.0.1, ::1, localhost, this host's
# names and addresses, and every --san. An existing CA is never replaced
# without --force (every client would have to fetch the new ca.crt); an
# existing server certificate is kept while it verifies against the CA,
# carries the same names and has 30 days left, unless --renew.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=../lib/pki.sh
. "${script_dir}/../lib/pki.sh"

usage() {
  cat <<'USAGE'
usage: generate-certs.sh [--out DIR] [--name NAME] [--san HOST|IP]... [--no-host-names]
                         [--ca-days N] [--days N] [--force] [--renew]
  --out DIR         where to write (default: deploy/tls/out)
  --name NAME       the server certificate's common name (default: this host's name)
  --san HOST|IP     another name or address the server is reached by (repeatable)
  --no-host-names   do not add this host's own names and addresses (only
                    127.0.0.1, ::1, localhost and --san)
  --ca-days N       CA lifetime in days (default 3650)
  --days N          server certificate lifetime in days (default 825)
  --force           replace the CA (the old one is kept as ca.crt.<date>);
                    every client must then get the new ca.crt
  --renew           issue a new server certificate even if the current one is fine
USAGE
}

out="${script_dir}/out"
name="$(hostname 2>/dev/null || echo localhost)"
sans=()
host_names=1
ca_days=3650
days=825
force=0
renew=0
while [ "$#" -gt 0 ]; do
  case "$1" in
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --name) name="${2:?--name needs a value}"; shift 2 ;;
    --san) sans+=("${2:?--san needs a host name or an IP address}"); shift 2 ;;
    --no-host-names) host_names=0; shift ;;
    --ca-days) ca_days="${2:?--ca-days needs a number}"; shift 2 ;;
    --days) days="${2:?--days needs a number}"; shift 2 ;;
    --force) force=1; shift ;;
    --renew) renew=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "generate-certs.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
for n in "${ca_days}" "${days}"; do
  if ! [[ "${n}" =~ ^[1-9][0-9]*$ ]]; then
    echo "generate-certs.sh: --days and --ca-days take a positive number of days, not ${n}" >&2
    exit 2
  fi
done
command -v openssl >/dev/null 2>&1 || { echo "generate-certs.sh: openssl is required" >&2; exit 1; }

names=(127.0.0.1 ::1 localhost "${name}")
if [ "${host_names}" = 1 ]; then
  names+=("$(hostname 2>/dev/null || true)" "$(hostname -f 2>/dev/null || true)")
  if addrs="$(hostname -I 2>/dev/null)"; then
    # shellcheck disable=SC2206 # split the address list on blanks
    names+=(${addrs})
  fi
fi
names+=("${sans[@]+"${sans[@]}"}")
san="$(pki_san_line "${names[@]}")"

mkdir -p "${out}"
chmod 0700 "${out}"
pki_tmpdir
trap 'rm -rf "${PKI_TMP}"' EXIT

ca_crt="${out}/ca.crt" ca_key="${out}/ca.key"
if [ -f "${ca_crt}" ] && [ ! -f "${ca_key}" ]; then
  echo "generate-certs.sh: ${ca_crt} exists without its key ${ca_key}: restore the key, or start over with --force" >&2
  exit 1
fi
if [ -f "${ca_crt}" ] && [ "${force}" = 0 ]; then
  echo "== keeping the client CA ${ca_crt} (--force replaces it)"
else
  if [ -f "${ca_crt}" ]; then
    echo "== --force: replacing the client CA ${ca_crt}; every client must get the new ca.crt"
    pki_backup "${ca_crt}" "${ca_key}"
  fi
  echo "== new client CA ${ca_crt} (valid ${ca_days} days)"
  pki_new_ca "${ca_crt}" "${ca_key}" "unibus client CA" "${ca_days}"
fi

crt="${out}/server.crt" key="${out}/server.key"
if [ "${renew}" = 0 ] && [ "${force}" = 0 ] && pki_leaf_current "${ca_crt}" "${crt}" "${key}" "${san}"; then
  echo "== keeping the server certificate ${crt} (--renew issues a new one)"
else
  echo "== server certificate ${crt} for ${name}: ${san}"
  pki_issue "${ca_crt}" "${ca_key}" "${crt}" "${key}" "${name}" "serverAuth" "${days}" "${san}"
fi
pki_verifies "${ca_crt}" "${crt}" || { echo "generate-certs.sh: ${crt} does not verify against ${ca_crt}" >&2; exit 1; }
echo "== done: clients pin ${ca_crt}; the server uses --tls-cert ${crt} --tls-key ${key}"
