#!/usr/bin/env bash
# Stages a unibus cluster from nodes.env. A dry run by default: it checks
# the topology and the generated material, writes what each node would get
# under out/<node>/ (its cluster.env, the unit, the install script) and
# prints the whole plan — every node, file and command — without building,
# copying or contacting anything.
#
#   ./deploy-cluster.sh          # dry run: read the plan
#   ./deploy-cluster.sh --yes    # do it
#
# With --yes it cross-builds membershipd (linux/amd64, CGO_ENABLED=0) into
# build/, then for each node copies with rsync over ssh into /opt/unibus/
# the binary, cluster.env, the unit, the node's TLS material and the route
# secret, and installs the unit (/etc/systemd/system, daemon-reload). It
# starts nothing: start every node together afterwards (README.md).
#
# Needs, from the steps before (README.md): out/<node>/tls/ from
# generate-cluster-certs.sh and secrets/cluster.pass (the route secret
# shared by every node; a copy readable by others is set to 0600, with a
# warning).
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${script_dir}/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=../lib/pki.sh
. "${script_dir}/../lib/pki.sh"
# shellcheck source-path=SCRIPTDIR source=../lib/nodes.sh
. "${script_dir}/../lib/nodes.sh"

remote_dir=/opt/unibus
unit_name=membershipd-cluster.service

usage() {
  cat <<'USAGE'
usage: deploy-cluster.sh [--yes] [--nodes FILE] [--out DIR] [--secrets DIR] [--build DIR]
                         [--binary FILE] [--local DIR]
  --yes          build, copy and install (default: a dry run that prints the plan)
  --nodes FILE   the topology (default: nodes.env beside this script)
  --out DIR      generated material, from generate-cluster-certs.sh (default: out/)
  --secrets DIR  holds cluster.pass, the route secret (default: secrets/)
  --build DIR    where the cross-built binary goes (default: build/)
  --binary FILE  ship this linux/amd64 membershipd instead of building one
  --local DIR    rehearse on this machine: node N's app dir is DIR/N instead of
                 /opt/unibus on its host; rsync copies locally, nothing is
                 installed and ssh is not used
USAGE
}

yes=0
nodes_file="${script_dir}/nodes.env"
out="${script_dir}/out"
secrets="${script_dir}/secrets"
build="${script_dir}/build"
binary=""
local_root=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --yes) yes=1; shift ;;
    --nodes) nodes_file="${2:?--nodes needs a file}"; shift 2 ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --secrets) secrets="${2:?--secrets needs a directory}"; shift 2 ;;
    --build) build="${2:?--build needs a directory}"; shift 2 ;;
    --binary) binary="${2:?--binary needs a file}"; shift 2 ;;
    --local) local_root="${2:?--local needs a directory}"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "deploy-cluster.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

nodes_load "${nodes_file}" deploy-cluster.sh

# abs PATH: PATH made absolute (it need not exist).
abs() {
  case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$(pwd)" "$1" ;;
  esac
}
out="$(abs "${out}")" secrets="$(abs "${secrets}")" build="$(abs "${build}")"
[ -z "${local_root}" ] || local_root="$(abs "${local_root}")"
[ -z "${binary}" ] || binary="$(abs "${binary}")"
for p in "${out}" "${secrets}" "${build}" "${local_root}" "${binary}"; do
  case "${p}" in
    *[[:space:]]*) echo "deploy-cluster.sh: paths must not contain blanks (they end up in cluster.env): ${p}" >&2; exit 2 ;;
  esac
done

# file_mode FILE: the permission bits in octal (GNU or BSD stat).
file_mode() {
  stat -c '%a' "$1" 2>/dev/null || stat -f '%Lp' "$1"
}

# Everything the plan ships must exist before anything is staged.
missing=()
for ((i = 0; i < ${#NODE_NAME[@]}; i++)); do
  for f in ca.crt server.crt server.key route-ca.crt route.crt route.key; do
    [ -f "${out}/${NODE_NAME[i]}/tls/${f}" ] || missing+=("${out}/${NODE_NAME[i]}/tls/${f}  (run ./generate-cluster-certs.sh)")
  done
done
pass_file="${secrets}/cluster.pass"
if [ ! -s "${pass_file}" ]; then
  missing+=("${pass_file}  (create it: mkdir -p ${secrets} && (umask 077 && openssl rand -hex 32 >${pass_file}))")
elif [ "$(file_mode "${pass_file}")" != 600 ] && [ "$(file_mode "${pass_file}")" != 400 ]; then
  # openssl rand ... > secrets/cluster.pass under the usual umask makes it
  # 0644: fix it, and say so (whoever could read it may have a copy).
  echo "deploy-cluster.sh: warning: ${pass_file} was mode $(file_mode "${pass_file}"), readable by other users of this machine; setting it to 0600 (if someone else may have read it, make a new secret)" >&2
  chmod 600 "${pass_file}"
fi
if [ -n "${binary}" ] && [ ! -x "${binary}" ]; then
  missing+=("${binary}  (--binary: no such executable)")
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deploy-cluster.sh: missing material; nothing was done:" >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 1
fi

if [ -n "${binary}" ]; then
  ship_binary="${binary}"
else
  ship_binary="${build}/membershipd"
fi
# GIT_OPTIONAL_LOCKS=0: describe --dirty must not refresh the repository's
# index (a dry run writes nothing outside out/).
version="$(GIT_OPTIONAL_LOCKS=0 git -C "${repo}" describe --always --dirty 2>/dev/null || echo dev)"
build_cmd=(env CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -ldflags "-X main.version=${version}" -o "${build}/membershipd.new" ./cmd/membershipd)

# app_dir I: where node I's files live on its host (or in the rehearsal).
app_dir() {
  if [ -n "${local_root}" ]; then
    printf '%s/%s\n' "${local_root}" "${NODE_NAME[$1]}"
  else
    printf '%s\n' "${remote_dir}"
  fi
}

# stage I: writes node I's cluster.env, unit and install script under
# out/<node>/.
stage() {
  local i="$1" name="${NODE_NAME[$1]}" dir app
  dir="${out}/${name}"
  app="$(app_dir "${i}")"
  cat >"${dir}/cluster.env.tmp" <<ENV
# Node ${name} of cluster ${CLUSTER_NAME}: the settings of ${unit_name}.
# Written by deploy-cluster.sh from nodes.env; edit nodes.env and re-run it
# rather than this file.
NODE_NAME=${name}
CLUSTER_NAME=${CLUSTER_NAME}
BIND=$(node_bind "${i}")
HTTP_PORT=${HTTP_PORT}
NATS_PORT=${NATS_PORT}
CLUSTER_PORT=${CLUSTER_PORT}
ROUTES=$(node_routes "${i}")
KV_REPLICAS=${KV_REPLICAS}
DATA_DIR=${app}/local_files
INTERNAL_ID_FILE=${app}/secrets/internal.id
CLUSTER_PASS_FILE=${app}/secrets/cluster.pass
TLS_CERT=${app}/tls/server.crt
TLS_KEY=${app}/tls/server.key
CA_CERT=${app}/tls/ca.crt
ROUTE_TLS_CERT=${app}/tls/route.crt
ROUTE_TLS_KEY=${app}/tls/route.key
ROUTE_TLS_CA=${app}/tls/route-ca.crt
ENV
  mv -f "${dir}/cluster.env.tmp" "${dir}/cluster.env"
  cp -f "${script_dir}/${unit_name}" "${dir}/${unit_name}"
  cat >"${dir}/install-node.sh.tmp" <<INSTALL
#!/bin/sh
# Node ${name}: run as root on the node by deploy-cluster.sh --yes, after
# the files are copied to ${remote_dir}. Installs the unit; starts nothing.
set -eu
id -u unibus >/dev/null 2>&1 || useradd --system --home-dir ${remote_dir} --no-create-home --shell /usr/sbin/nologin unibus
chown root:root ${remote_dir} ${remote_dir}/membershipd ${remote_dir}/cluster.env ${remote_dir}/${unit_name}
chmod 0755 ${remote_dir} ${remote_dir}/membershipd
chmod 0644 ${remote_dir}/cluster.env ${remote_dir}/${unit_name}
chown -R root:unibus ${remote_dir}/tls
chmod 0755 ${remote_dir}/tls
chmod 0644 ${remote_dir}/tls/ca.crt ${remote_dir}/tls/route-ca.crt ${remote_dir}/tls/server.crt ${remote_dir}/tls/route.crt
chmod 0640 ${remote_dir}/tls/server.key ${remote_dir}/tls/route.key
install -d -o unibus -g unibus -m 0700 ${remote_dir}/local_files ${remote_dir}/secrets
chown unibus:unibus ${remote_dir}/secrets ${remote_dir}/secrets/cluster.pass
chmod 0700 ${remote_dir}/secrets
chmod 0600 ${remote_dir}/secrets/cluster.pass
install -m 0644 ${remote_dir}/${unit_name} /etc/systemd/system/${unit_name}
systemctl daemon-reload
echo "${name}: ${unit_name} installed, not started"
INSTALL
  mv -f "${dir}/install-node.sh.tmp" "${dir}/install-node.sh"
}

# node_steps I: node I's commands, each passed to step (which prints it in
# the plan and prints and runs it with --yes).
node_steps() {
  local i="$1" name="${NODE_NAME[$1]}" host="${NODE_SSH[$1]}" app dest rsync_path=()
  app="$(app_dir "${i}")"
  if [ -n "${local_root}" ]; then
    step mkdir -p "${app}/secrets" "${app}/local_files"
    step chmod 0700 "${app}/secrets" "${app}/local_files"
    dest="${app}/"
  else
    step ssh "${host}" ${REMOTE_SUDO:+"${REMOTE_SUDO}"} mkdir -p "${remote_dir}/secrets"
    dest="${host}:${remote_dir}/"
    [ -z "${REMOTE_SUDO}" ] || rsync_path=(--rsync-path "${REMOTE_SUDO} rsync")
  fi
  step rsync -rlpt --exclude "*.san" "${rsync_path[@]+"${rsync_path[@]}"}" "${ship_binary}" "${out}/${name}/cluster.env" "${out}/${name}/${unit_name}" "${out}/${name}/tls" "${dest}"
  step rsync -rlpt "${rsync_path[@]+"${rsync_path[@]}"}" "${pass_file}" "${dest}secrets/cluster.pass"
  if [ -z "${local_root}" ]; then
    step ssh "${host}" ${REMOTE_SUDO:+"${REMOTE_SUDO}"} sh -s "<" "${out}/${name}/install-node.sh"
  fi
}

# step WORDS: one command of the plan; STEP_MODE show prints it, run
# prints and runs it.
STEP_MODE=show
step() {
  if [ "${STEP_MODE}" = run ]; then run_cmd "$@"; else show_cmd "$@"; fi
}

# show_cmd WORDS: one command, shell-quoted (a lone < is a redirection).
show_cmd() {
  local w line="   "
  for w in "$@"; do
    if [ "${w}" = "<" ]; then line="${line} <"; else line="${line} $(printf '%q' "${w}")"; fi
  done
  printf '%s\n' "${line}"
}

# run_cmd WORDS: prints and runs one command.
run_cmd() {
  show_cmd "$@"
  local args=() w redirect=""
  for w in "$@"; do
    if [ "${w}" = "<" ]; then redirect=next; continue; fi
    if [ "${redirect}" = next ]; then redirect="${w}"; continue; fi
    args+=("${w}")
  done
  if [ -n "${redirect}" ]; then
    "${args[@]}" <"${redirect}"
  else
    "${args[@]}"
  fi
}

for ((i = 0; i < ${#NODE_NAME[@]}; i++)); do
  stage "${i}"
done

# The plan.
if [ "${yes}" = 1 ]; then mode="--yes: building, copying and installing"; else mode="DRY RUN: nothing is built, copied or installed"; fi
echo "== deploy-cluster.sh: ${mode}"
echo "cluster ${CLUSTER_NAME}: ${#NODE_NAME[@]} nodes, R${KV_REPLICAS}, routes over ${ROUTE_NETWORK}, bind ${BIND}, ports http ${HTTP_PORT} nats ${NATS_PORT} routes ${CLUSTER_PORT}"
echo "topology ${nodes_file}; material ${out}; secret ${pass_file}"
if [ -n "${local_root}" ]; then
  echo "rehearsal (--local): node N's app dir is ${local_root}/N; no ssh, the unit is not installed"
fi
echo
echo "== build"
if [ -n "${binary}" ]; then
  echo "   (--binary) ship ${binary}"
else
  echo "   (in ${repo})"
  show_cmd "${build_cmd[@]}"
  show_cmd mv -f "${build}/membershipd.new" "${build}/membershipd"
fi
for ((i = 0; i < ${#NODE_NAME[@]}; i++)); do
  name="${NODE_NAME[i]}"
  app="$(app_dir "${i}")"
  if [ -n "${local_root}" ]; then where="${app}"; else where="${NODE_SSH[i]}:${remote_dir}"; fi
  echo
  echo "== node ${name}: ssh ${NODE_SSH[i]}, public ${NODE_PUBLIC[i]}, wg ${NODE_WG[i]}, routes $(node_routes "${i}")"
  echo "   files -> ${where}/"
  echo "     ${ship_binary} -> membershipd"
  echo "     ${out}/${name}/cluster.env -> cluster.env"
  echo "     ${out}/${name}/${unit_name} -> ${unit_name}"
  for f in ca.crt server.crt server.key route-ca.crt route.crt route.key; do
    echo "     ${out}/${name}/tls/${f} -> tls/${f}"
  done
  echo "     ${pass_file} -> secrets/cluster.pass"
  echo "   ${out}/${name}/cluster.env:"
  grep -v '^#' "${out}/${name}/cluster.env" | sed 's/^/     /'
  echo "   commands:"
  node_steps "${i}"
  if [ -z "${local_root}" ]; then
    echo "   ${out}/${name}/install-node.sh (run on the node as root):"
    grep -v '^#' "${out}/${name}/install-node.sh" | sed 's/^/     /'
  fi
done
echo
echo "== not done by this script: start every node together, then poll /healthz (README.md, Bring up)"
if [ -z "${local_root}" ]; then
  for ((i = 0; i < ${#NODE_NAME[@]}; i++)); do
    echo "    ssh ${NODE_SSH[i]} ${REMOTE_SUDO:+${REMOTE_SUDO} }systemctl enable --now ${unit_name}"
  done
fi

if [ "${yes}" = 0 ]; then
  echo
  echo "DRY RUN: only ${out}/<node>/ was written. Re-run with --yes to build, copy and install."
  exit 0
fi

need=(rsync)
[ -n "${binary}" ] || need+=(go)
[ -n "${local_root}" ] || need+=(ssh)
for tool in "${need[@]}"; do
  command -v "${tool}" >/dev/null 2>&1 || { echo "deploy-cluster.sh: ${tool} is required" >&2; exit 1; }
done

echo
echo "== running"
STEP_MODE=run
if [ -z "${binary}" ]; then
  mkdir -p "${build}"
  (cd "${repo}" && run_cmd "${build_cmd[@]}")
  run_cmd mv -f "${build}/membershipd.new" "${build}/membershipd"
fi
for ((i = 0; i < ${#NODE_NAME[@]}; i++)); do
  echo "-- node ${NODE_NAME[i]}"
  node_steps "${i}"
done
echo
echo "== done: ${#NODE_NAME[@]} nodes staged; nothing was started."
