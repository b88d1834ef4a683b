# shellcheck shell=bash
# Reads deploy/cluster/nodes.env. Sourced, not run. The file is parsed, not
# executed: only the keys below are accepted, and an unknown key, a value
# that does not parse or a placeholder left in is an error, all of them
# reported at once. Needs lib/pki.sh (pki_is_ip) sourced first.

# nodes_load FILE: sets CLUSTER_NAME HTTP_PORT NATS_PORT CLUSTER_PORT
# ROUTE_NETWORK KV_REPLICAS BIND REMOTE_SUDO, and the arrays NODE_NAME
# NODE_SSH NODE_PUBLIC NODE_WG (one entry per node, WG "-" when none).
# Exits 1 with every problem named.
nodes_load() {
  local file="$1" prog="${2:-nodes.env}"
  if [ ! -f "${file}" ]; then
    echo "${prog}: ${file} not found (copy deploy/cluster/nodes.env and fill it in, or pass --nodes FILE)" >&2
    exit 1
  fi
  CLUSTER_NAME="" HTTP_PORT="" NATS_PORT="" CLUSTER_PORT="" ROUTE_NETWORK="" KV_REPLICAS="" BIND="" REMOTE_SUDO=""
  NODE_NAME=() NODE_SSH=() NODE_PUBLIC=() NODE_WG=()
  local problems=() placeholders=() line key value n=0 ph
  local placeholder_re='<([A-Za-z0-9_]+)>'
  local seen=" "
  while IFS= read -r line || [ -n "${line}" ]; do
    n=$((n + 1))
    line="${line#"${line%%[![:space:]]*}"}"
    line="${line%"${line##*[![:space:]]}"}"
    case "${line}" in "" | "#"*) continue ;; esac
    while [[ "${line}" =~ ${placeholder_re} ]]; do
      ph="${BASH_REMATCH[1]}"
      placeholders+=("<${ph}> (line ${n})")
      line="${line/"<${ph}>"/_}"
    done
    if ! [[ "${line}" =~ ^([A-Z_]+)=(.*)$ ]]; then
      problems+=("line ${n}: not KEY=value")
      continue
    fi
    key="${BASH_REMATCH[1]}" value="${BASH_REMATCH[2]}"
    if [[ "${value}" =~ ^\"(.*)\"$ || "${value}" =~ ^\'(.*)\'$ ]]; then
      value="${BASH_REMATCH[1]}"
    fi
    if [ "${key}" != NODE ]; then
      case "${seen}" in *" ${key} "*) problems+=("line ${n}: ${key} is set twice") ;; esac
      seen="${seen}${key} "
    fi
    case "${key}" in
      CLUSTER_NAME) CLUSTER_NAME="${value}" ;;
      HTTP_PORT) HTTP_PORT="${value}" ;;
      NATS_PORT) NATS_PORT="${value}" ;;
      CLUSTER_PORT) CLUSTER_PORT="${value}" ;;
      ROUTE_NETWORK) ROUTE_NETWORK="${value}" ;;
      KV_REPLICAS) KV_REPLICAS="${value}" ;;
      BIND) BIND="${value}" ;;
      REMOTE_SUDO) REMOTE_SUDO="${value}" ;;
      NODE)
        local fields=()
        read -r -a fields <<<"${value}"
        if [ "${#fields[@]}" -ne 4 ]; then
          problems+=("line ${n}: NODE needs four fields: NAME SSH_HOST PUBLIC_IP WG_IP (- when none)")
          continue
        fi
        NODE_NAME+=("${fields[0]}") NODE_SSH+=("${fields[1]}") NODE_PUBLIC+=("${fields[2]}") NODE_WG+=("${fields[3]}")
        ;;
      *) problems+=("line ${n}: unknown key ${key}") ;;
    esac
  done <"${file}"

  if [ "${#placeholders[@]}" -gt 0 ]; then
    echo "${prog}: ${file} still has placeholders; fill in these values first:" >&2
    printf '  %s\n' "${placeholders[@]}" >&2
    exit 1
  fi

  [[ "${CLUSTER_NAME}" =~ ^[A-Za-z0-9_-]+$ ]] || problems+=("CLUSTER_NAME must be letters, digits, - or _ (got '${CLUSTER_NAME}')")
  local p
  for p in HTTP_PORT NATS_PORT CLUSTER_PORT; do
    if ! [[ "${!p}" =~ ^[1-9][0-9]{0,4}$ ]] || [ "${!p}" -gt 65535 ]; then
      problems+=("${p} must be a port number 1-65535 (got '${!p}')")
    fi
  done
  if [ "${HTTP_PORT}" = "${NATS_PORT}" ] || [ "${HTTP_PORT}" = "${CLUSTER_PORT}" ] || [ "${NATS_PORT}" = "${CLUSTER_PORT}" ]; then
    problems+=("HTTP_PORT, NATS_PORT and CLUSTER_PORT must differ")
  fi
  case "${ROUTE_NETWORK}" in public | wg) ;; *) problems+=("ROUTE_NETWORK must be public or wg (got '${ROUTE_NETWORK}')") ;; esac
  case "${BIND}" in 0.0.0.0 | :: | public) ;; *) problems+=("BIND must be 0.0.0.0, :: or public (got '${BIND}')") ;; esac
  case "${REMOTE_SUDO}" in "" | sudo) ;; *) problems+=("REMOTE_SUDO must be empty or sudo (got '${REMOTE_SUDO}')") ;; esac
  local count="${#NODE_NAME[@]}"
  if [ "${count}" -lt 2 ]; then
    problems+=("a cluster needs at least two NODE lines (three for HA), found ${count}")
  fi
  if ! [[ "${KV_REPLICAS}" =~ ^[1-5]$ ]]; then
    problems+=("KV_REPLICAS must be 1-5 (got '${KV_REPLICAS}')")
  elif [ "${KV_REPLICAS}" -gt "${count}" ] && [ "${count}" -gt 0 ]; then
    problems+=("KV_REPLICAS=${KV_REPLICAS} needs at least ${KV_REPLICAS} nodes, found ${count}")
  fi
  local i names=" " ips=" "
  for ((i = 0; i < count; i++)); do
    local nm="${NODE_NAME[i]}"
    [[ "${nm}" =~ ^[a-z0-9][a-z0-9-]{0,62}$ ]] || problems+=("node '${nm}': NAME must match [a-z0-9][a-z0-9-]*")
    case "${names}" in *" ${nm} "*) problems+=("node '${nm}' is listed twice") ;; esac
    names="${names}${nm} "
    case "${NODE_SSH[i]}" in -*) problems+=("node '${nm}': SSH_HOST must not start with - (got '${NODE_SSH[i]}')") ;; esac
    pki_is_ip "${NODE_PUBLIC[i]}" || problems+=("node '${nm}': PUBLIC_IP '${NODE_PUBLIC[i]}' is not an IP address")
    case "${ips}" in *" ${NODE_PUBLIC[i]} "*) problems+=("node '${nm}': PUBLIC_IP ${NODE_PUBLIC[i]} is used twice") ;; esac
    ips="${ips}${NODE_PUBLIC[i]} "
    if [ "${NODE_WG[i]}" != "-" ]; then
      pki_is_ip "${NODE_WG[i]}" || problems+=("node '${nm}': WG_IP '${NODE_WG[i]}' is not an IP address (or -)")
    elif [ "${ROUTE_NETWORK}" = wg ]; then
      problems+=("node '${nm}': ROUTE_NETWORK=wg needs a WG_IP")
    fi
  done
  if [ "${#problems[@]}" -gt 0 ]; then
    echo "${prog}: ${file} is not valid:" >&2
    printf '  %s\n' "${problems[@]}" >&2
    exit 1
  fi
  if [ "${KV_REPLICAS}" -lt 3 ]; then
    echo "${prog}: warning: KV_REPLICAS=${KV_REPLICAS} is not HA: with fewer than 3 replicas one node down stops the control plane" >&2
  fi
}

# node_route_ip I: the address the other nodes' routes use for node I.
node_route_ip() {
  if [ "${ROUTE_NETWORK}" = wg ]; then
    printf '%s\n' "${NODE_WG[$1]}"
  else
    printf '%s\n' "${NODE_PUBLIC[$1]}"
  fi
}

# host_port HOST PORT: HOST:PORT, with brackets around an IPv6 address.
host_port() {
  case "$1" in
    *:*) printf '[%s]:%s\n' "$1" "$2" ;;
    *) printf '%s:%s\n' "$1" "$2" ;;
  esac
}

# node_routes I: the bare route URLs of every node but I, comma-separated.
node_routes() {
  local i out=""
  for ((i = 0; i < ${#NODE_NAME[@]}; i++)); do
    [ "${i}" -eq "$1" ] && continue
    out="${out:+${out},}nats://$(host_port "$(node_route_ip "${i}")" "${CLUSTER_PORT}")"
  done
  printf '%s\n' "${out}"
}

# node_bind I: the address node I binds.
node_bind() {
  if [ "${BIND}" = public ]; then
    printf '%s\n' "${NODE_PUBLIC[$1]}"
  else
    printf '%s\n' "${BIND}"
  fi
}
