# shellcheck shell=bash
# Certificate helpers shared by tls/generate-certs.sh and
# cluster/generate-cluster-certs.sh. Sourced, not run. Needs openssl 1.1.1
# or later. Keys are ECDSA P-256, written 0600; every file is written to a
# temporary name first and renamed, so an interrupted run never leaves half
# a certificate behind.

# pki_tmpdir makes the scratch directory the helpers use; the caller
# removes it (trap).
pki_tmpdir() {
  PKI_TMP="$(mktemp -d "${TMPDIR:-/tmp}/unibus-pki.XXXXXX")"
}

# pki_new_ca CRT KEY CN DAYS: a self-signed CA that may sign leaf
# certificates only (pathlen 0).
pki_new_ca() {
  local crt="$1" key="$2" cn="$3" days="$4"
  local cnf="${PKI_TMP}/ca.cnf"
  cat >"${cnf}" <<CNF
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
O = unibus
CN = ${cn}
[v3_ca]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
CNF
  (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "${key}.tmp" 2>/dev/null)
  openssl req -x509 -new -config "${cnf}" -key "${key}.tmp" -sha256 -days "${days}" -set_serial "0x$(openssl rand -hex 16)" -out "${crt}.tmp"
  mv -f "${key}.tmp" "${key}"
  mv -f "${crt}.tmp" "${crt}"
}

# pki_san_line NAME...: the subjectAltName value for the given host names
# and IP addresses (IPs are recognised by their form), duplicates removed,
# in the order given.
pki_san_line() {
  local out="" seen=" " item kind
  for item in "$@"; do
    [ -n "${item}" ] || continue
    case "${seen}" in *" ${item} "*) continue ;; esac
    seen="${seen}${item} "
    if pki_is_ip "${item}"; then kind="IP"; else kind="DNS"; fi
    out="${out:+${out},}${kind}:${item}"
  done
  printf '%s\n' "${out}"
}

# pki_is_ip S: whether S is an IPv4 or IPv6 address literal.
pki_is_ip() {
  local s="$1"
  if [[ "${s}" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]]; then
    return 0
  fi
  [[ "${s}" == *:* && "${s}" =~ ^[0-9A-Fa-f:.]+$ ]]
}

# pki_issue CA_CRT CA_KEY CRT KEY CN USAGE DAYS SAN_LINE: a leaf signed by
# the CA. USAGE is the extendedKeyUsage: serverAuth for the data plane,
# serverAuth,clientAuth for routes (each node is both ends of a route).
# The SAN line is kept beside the certificate (CRT.san) so that a later run
# can tell whether the wanted names changed.
pki_issue() {
  local ca_crt="$1" ca_key="$2" crt="$3" key="$4" cn="$5" usage="$6" days="$7" san="$8"
  local cnf="${PKI_TMP}/leaf.cnf" csr="${PKI_TMP}/leaf.csr"
  cat >"${cnf}" <<CNF
[req]
distinguished_name = dn
prompt = no
[dn]
O = unibus
CN = ${cn}
[v3_leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = ${usage}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = ${san}
CNF
  (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "${key}.tmp" 2>/dev/null)
  openssl req -new -config "${cnf}" -key "${key}.tmp" -out "${csr}"
  openssl x509 -req -in "${csr}" -CA "${ca_crt}" -CAkey "${ca_key}" -set_serial "0x$(openssl rand -hex 16)" \
    -days "${days}" -sha256 -extfile "${cnf}" -extensions v3_leaf -out "${crt}.tmp" 2>/dev/null
  printf '%s\n' "${san}" >"${crt}.san.tmp"
  mv -f "${key}.tmp" "${key}"
  mv -f "${crt}.tmp" "${crt}"
  mv -f "${crt}.san.tmp" "${crt}.san"
}

# pki_verifies CA_CRT CRT: whether CRT chains to CA_CRT (and to nothing
# else that happens to be in the system store).
pki_verifies() {
  openssl verify -no-CApath -CAfile "$1" "$2" >/dev/null 2>&1
}

# pki_leaf_current CA_CRT CRT KEY SAN_LINE: whether an existing leaf can be
# kept: it exists with its key, verifies against the CA, carries the wanted
# names and is valid for at least 30 more days.
pki_leaf_current() {
  local ca_crt="$1" crt="$2" key="$3" san="$4"
  [ -f "${crt}" ] && [ -f "${key}" ] && [ -f "${crt}.san" ] || return 1
  [ "$(cat "${crt}.san")" = "${san}" ] || return 1
  pki_verifies "${ca_crt}" "${crt}" || return 1
  openssl x509 -in "${crt}" -noout -checkend $((30 * 24 * 3600)) >/dev/null 2>&1
}

# pki_backup FILE...: moves each existing FILE aside to FILE.<UTC stamp>.
pki_backup() {
  local stamp f
  stamp="$(date -u +%Y%m%dT%H%M%SZ)"
  for f in "$@"; do
    if [ -e "${f}" ]; then
      mv -f "${f}" "${f}.${stamp}"
      echo "  kept the old ${f##*/} as ${f}.${stamp}"
    fi
  done
}
