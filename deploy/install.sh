#!/usr/bin/env bash
# Installs membershipd as a systemd user service on this machine, from this
# checkout. Idempotent: run it again after a `git pull` to rebuild and
# restart. It prints every step.
#
#   deploy/tls/generate-certs.sh     # once: the client CA and this host's certificate
#   deploy/install.sh
#
# What it does:
#   1. CGO_ENABLED=0 go build -o <app dir>/membershipd ./cmd/membershipd
#      (a different previous binary is kept as membershipd.prev)
#   2. links deploy/unibus-membershipd.service into ~/.config/systemd/user/
#      and writes the drop-in app-dir.conf beside it (WorkingDirectory and
#      ExecStart pointing at the app dir)
#   3. systemctl --user daemon-reload
#   4. systemctl --user enable --now unibus-membershipd.service, or, when it
#      is already running, enable + restart (to pick up the new binary)
#
# The unit binds 0.0.0.0 with TLS: it refuses to go on without the server
# certificate of deploy/tls/generate-certs.sh in <app dir>/deploy/tls/out/.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${script_dir}/.." && pwd)"
unit_name="unibus-membershipd.service"

usage() {
  cat <<'USAGE'
usage: install.sh [--app-dir DIR] [--no-start]
  --app-dir DIR   where the binary goes and the service runs: its working
                  directory, with state under DIR/local_files and TLS from
                  DIR/deploy/tls/out (default: this checkout)
  --no-start      link, reload and enable, but do not start or restart
USAGE
}

app_dir="${repo}"
start=1
while [ "$#" -gt 0 ]; do
  case "$1" in
    --app-dir) app_dir="${2:?--app-dir needs a directory}"; shift 2 ;;
    --no-start) start=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
mkdir -p "${app_dir}"
app_dir="$(cd "${app_dir}" && pwd)"

for tool in go systemctl; do
  command -v "${tool}" >/dev/null 2>&1 || { echo "install.sh: ${tool} is required" >&2; exit 1; }
done
if [ ! -f "${app_dir}/deploy/tls/out/server.crt" ] || [ ! -f "${app_dir}/deploy/tls/out/server.key" ]; then
  echo "install.sh: ${app_dir}/deploy/tls/out/server.crt is missing: the service binds 0.0.0.0 and needs TLS." >&2
  echo "  run: deploy/tls/generate-certs.sh --out ${app_dir}/deploy/tls/out" >&2
  exit 1
fi
case "${app_dir}" in
  *[[:space:]]* | *%*) echo "install.sh: the app dir must not contain blanks or % (systemd paths): ${app_dir}" >&2; exit 1 ;;
esac

unit_dir="${XDG_CONFIG_HOME:-${HOME}/.config}/systemd/user"
dropin_dir="${unit_dir}/${unit_name}.d"

echo "== build: CGO_ENABLED=0 go build -o ${app_dir}/membershipd ./cmd/membershipd (in ${repo})"
(cd "${repo}" && CGO_ENABLED=0 go build -o "${app_dir}/membershipd.new" ./cmd/membershipd)
if [ -f "${app_dir}/membershipd" ]; then
  if cmp -s "${app_dir}/membershipd" "${app_dir}/membershipd.new"; then
    echo "   the binary did not change"
  else
    echo "   the previous binary is kept as ${app_dir}/membershipd.prev (rollback)"
    cp -pf "${app_dir}/membershipd" "${app_dir}/membershipd.prev"
  fi
fi
mv -f "${app_dir}/membershipd.new" "${app_dir}/membershipd"

echo "== link: ${unit_dir}/${unit_name} -> ${script_dir}/${unit_name}"
mkdir -p "${unit_dir}" "${dropin_dir}"
ln -sfn "${script_dir}/${unit_name}" "${unit_dir}/${unit_name}"

dropin="${dropin_dir}/app-dir.conf"
want="$(cat <<CONF
# Written by deploy/install.sh: the app directory of this installation.
[Service]
WorkingDirectory=${app_dir}
ExecStart=
ExecStart=${app_dir}/membershipd
CONF
)"
if [ -f "${dropin}" ] && [ "$(cat "${dropin}")" = "${want}" ]; then
  echo "== drop-in: ${dropin} is up to date (app dir ${app_dir})"
else
  echo "== drop-in: ${dropin} (app dir ${app_dir})"
  printf '%s\n' "${want}" >"${dropin}.tmp"
  mv -f "${dropin}.tmp" "${dropin}"
fi

echo "== systemctl --user daemon-reload"
systemctl --user daemon-reload
if [ "${start}" = 1 ] && systemctl --user is-active --quiet "${unit_name}"; then
  echo "== systemctl --user enable ${unit_name}"
  systemctl --user enable "${unit_name}"
  echo "== systemctl --user restart ${unit_name} (it was running: picks up the new binary)"
  systemctl --user restart "${unit_name}"
  echo "== done. Check: systemctl --user status ${unit_name}; curl --cacert ${app_dir}/deploy/tls/out/ca.crt https://127.0.0.1:8470/healthz"
elif [ "${start}" = 1 ]; then
  echo "== systemctl --user enable --now ${unit_name}"
  systemctl --user enable --now "${unit_name}"
  echo "== done. Check: systemctl --user status ${unit_name}; curl --cacert ${app_dir}/deploy/tls/out/ca.crt https://127.0.0.1:8470/healthz"
else
  echo "== systemctl --user enable ${unit_name}"
  systemctl --user enable "${unit_name}"
  echo "== done (not started: --no-start). Start: systemctl --user start ${unit_name}"
fi
echo "   To keep it running without an open session: loginctl enable-linger ${USER:-\$USER}"
