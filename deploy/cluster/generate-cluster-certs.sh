#!/usr/bin/env bash
# Mints the cluster's certificates from nodes.env:
#   - a separate route CA (the cluster CA): it signs the route certificates
#     only, never a client's, so no client certificate can be presented on
#     the route port (membershipd refuses to start if the route CA also
#     signed its data-plane certificate);
#   - per node, a route certificate (server and client auth: a node is both
#     ends of its routes) naming the node's public and WireGuard addresses;
#   - per node, a data-plane server certificate (HTTPS control plane and TLS
#     data plane) signed by the client CA of ../tls/generate-certs.sh, so
#     clients that pin that CA trust every node. It names 127.0.0.1, ::1 and
#     localhost (for the admin CLI on the node), the node's name, SSH host
#     name and addresses.
#
#   ./generate-cluster-certs.sh            # into out/
#   ./generate-cluster-certs.sh --force    # rotate the route CA
#
# Layout (keys 0600; out/ is git-ignored and never leaves this machine
# except what deploy-cluster.sh copies to each node):
#   out/ca/route-ca.crt, out/ca/route-ca.key     the route CA
#   out/<node>/tls/route.crt, route.key          the node's route certificate
#   out/<node>/tls/server.crt, server.key        its data-plane certificate
#   out/<node>/tls/route-ca.crt, ca.crt          the two CA certificates it trusts
#
# Re-running is safe: the route CA is kept (--force replaces it and
# re-issues every route certificate), and a node's certificate is kept while
# it verifies against its CA, carries the same names and has 30 days left
# (--renew re-issues them all).
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=../lib/pki.sh
. "${script_dir}/../lib/pki.sh"
# shellcheck source-path=SCRIPTDIR source=../lib/nodes.sh
. "${script_dir}/../lib/nodes.sh"

usage() {
  cat <<'USAGE'
usage: generate-cluster-certs.sh [--nodes FILE] [--out DIR] [--ca-dir DIR] [--days N] [--force] [--renew]
  --nodes FILE   the topology (default: nodes.env beside this script)
  --out DIR      where to write (default: out/ beside this script)
  --ca-dir DIR   the client CA from ../tls/generate-certs.sh: ca.crt and ca.key
                 (default: ../tls/out)
  --days N       node certificate lifetime in days (default 825)
  --force        rotate the route CA: a new one (the old kept as
                 route-ca.crt.<date>) and new route certificates for every node
  --renew        re-issue every node's certificates under the current CAs
USAGE
}

nodes_file="${script_dir}/nodes.env"
out="${script_dir}/out"
ca_dir="${script_dir}/../tls/out"
days=825
force=0
renew=0
while [ "$#" -gt 0 ]; do
  case "$1" in
    --nodes) nodes_file="${2:?--nodes needs a file}"; shift 2 ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --ca-dir) ca_dir="${2:?--ca-dir needs a directory}"; shift 2 ;;
    --days) days="${2:?--days needs a number}"; shift 2 ;;
    --force) force=1; shift ;;
    --renew) renew=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "generate-cluster-certs.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
if ! [[ "${days}" =~ ^[1-9][0-9]*$ ]]; then
  echo "generate-cluster-certs.sh: --days takes a positive number of days, not ${days}" >&2
  exit 2
fi

nodes_load "${nodes_file}" generate-cluster-certs.sh
command -v openssl >/dev/null 2>&1 || { echo "generate-cluster-certs.sh: openssl is required" >&2; exit 1; }

client_ca="${ca_dir}/ca.crt" client_key="${ca_dir}/ca.key"
if [ ! -f "${client_ca}" ] || [ ! -f "${client_key}" ]; then
  echo "generate-cluster-certs.sh: the client CA ${client_ca} (with its key ca.key) is missing:" >&2
  echo "  run deploy/tls/generate-certs.sh first (or pass --ca-dir DIR)" >&2
  exit 1
fi

mkdir -p "${out}/ca"
chmod 0700 "${out}" "${out}/ca"
pki_tmpdir
trap 'rm -rf "${PKI_TMP}"' EXIT

route_ca="${out}/ca/route-ca.crt" route_key="${out}/ca/route-ca.key"
if [ -f "${route_ca}" ] && [ ! -f "${route_key}" ]; then
  echo "generate-cluster-certs.sh: ${route_ca} exists without its key: restore it, or rotate with --force" >&2
  exit 1
fi
if [ -f "${route_ca}" ] && [ "${force}" = 0 ]; then
  echo "== keeping the route CA ${route_ca} (--force rotates it)"
else
  if [ -f "${route_ca}" ]; then
    echo "== --force: rotating the route CA ${route_ca}; every node needs its new route certificate and route-ca.crt together"
    pki_backup "${route_ca}" "${route_key}"
  fi
  echo "== new route CA ${route_ca}"
  pki_new_ca "${route_ca}" "${route_key}" "unibus ${CLUSTER_NAME} route CA" 3650
fi
if cmp -s "${route_ca}" "${client_ca}"; then
  echo "generate-cluster-certs.sh: the route CA and the client CA are the same certificate; they must be separate" >&2
  exit 1
fi

for ((i = 0; i < ${#NODE_NAME[@]}; i++)); do
  name="${NODE_NAME[i]}"
  dir="${out}/${name}/tls"
  mkdir -p "${dir}"
  chmod 0700 "${out}/${name}" "${dir}"
  wg=""
  [ "${NODE_WG[i]}" = "-" ] || wg="${NODE_WG[i]}"
  ssh_name="${NODE_SSH[i]##*@}"
  ssh_name="${ssh_name#[}" ssh_name="${ssh_name%]}"
  route_san="$(pki_san_line "${name}" "${NODE_PUBLIC[i]}" "${wg}")"
  server_san="$(pki_san_line 127.0.0.1 ::1 localhost "${name}" "${ssh_name}" "${NODE_PUBLIC[i]}" "${wg}")"

  if [ "${renew}" = 0 ] && [ "${force}" = 0 ] && pki_leaf_current "${route_ca}" "${dir}/route.crt" "${dir}/route.key" "${route_san}"; then
    echo "== ${name}: keeping route certificate ${dir}/route.crt"
  else
    echo "== ${name}: route certificate ${dir}/route.crt: ${route_san}"
    pki_issue "${route_ca}" "${route_key}" "${dir}/route.crt" "${dir}/route.key" "${name}" "serverAuth,clientAuth" "${days}" "${route_san}"
  fi
  if [ "${renew}" = 0 ] && pki_leaf_current "${client_ca}" "${dir}/server.crt" "${dir}/server.key" "${server_san}"; then
    echo "== ${name}: keeping data-plane certificate ${dir}/server.crt"
  else
    echo "== ${name}: data-plane certificate ${dir}/server.crt (client CA): ${server_san}"
    pki_issue "${client_ca}" "${client_key}" "${dir}/server.crt" "${dir}/server.key" "${name}" "serverAuth" "${days}" "${server_san}"
  fi
  cp -f "${route_ca}" "${dir}/route-ca.crt"
  cp -f "${client_ca}" "${dir}/ca.crt"
  chmod 0644 "${dir}/route-ca.crt" "${dir}/ca.crt"

  pki_verifies "${route_ca}" "${dir}/route.crt" || { echo "generate-cluster-certs.sh: ${dir}/route.crt does not verify against the route CA" >&2; exit 1; }
  pki_verifies "${client_ca}" "${dir}/server.crt" || { echo "generate-cluster-certs.sh: ${dir}/server.crt does not verify against the client CA" >&2; exit 1; }
  if pki_verifies "${client_ca}" "${dir}/route.crt" || pki_verifies "${route_ca}" "${dir}/server.crt"; then
    echo "generate-cluster-certs.sh: ${name}: a route certificate verifies against the client CA or a data-plane certificate against the route CA: the CAs are not separate" >&2
    exit 1
  fi
done
echo "== done: ${#NODE_NAME[@]} nodes in ${out}; next: create the route secret (if not yet) and run ./deploy-cluster.sh (a dry run)"
