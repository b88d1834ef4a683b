#!/usr/bin/env bash
# Writes the state of one node (SQLite or kv) made by the previous protocol (protocol 1,
# commit 0e820e9): the fixtures v1-*.tar.gz beside this script, which
# internal/upgrade's tests start this tree's membershipd on. To make them
# again:
#   git worktree add /tmp/v1 0e820e9 && (cd /tmp/v1 &&
#     go build -o /tmp/v1bin/membershipd ./cmd/membershipd &&
#     go build -o /tmp/v1bin/unibus ./cmd/unibus)
#   ./gen-v1.sh sqlite /tmp/fx/sqlite && tar -C /tmp/fx/sqlite -czf v1-sqlite.tar.gz .
# (likewise kv, and gen-v1-cluster.sh /tmp/fx/cluster for v1-cluster.tar.gz).
# It uses fixed ports 1847x/1425x/1626x on loopback.
set -euo pipefail
store="$1"; out="$2"; bin=/tmp/v1bin
rm -rf "$out"; mkdir -p "$out"; cd "$out"
HTTP=18471; NATS=14251
args=(--http-port $HTTP --nats-port $NATS)
[ "$store" = kv ] && args+=(--store kv)
"$bin/membershipd" "${args[@]}" >server.log 2>&1 &
pid=$!
for i in $(seq 1 100); do curl -fsS http://127.0.0.1:$HTTP/healthz >/dev/null 2>&1 && break; sleep 0.2; done
U=("$bin/unibus" --server http://127.0.0.1:$HTTP --nats nats://127.0.0.1:$NATS)
ADMIN=(--identity local_files/admin.id)
BOB=$("${U[@]}" keygen -o bob.id)
"${U[@]}" "${ADMIN[@]}" user add --handle bob --sign-pub "$BOB"
"${U[@]}" --identity bob.id register
"${U[@]}" "${ADMIN[@]}" room create history
"${U[@]}" "${ADMIN[@]}" room add history bob
for i in 1 2 3; do "${U[@]}" "${ADMIN[@]}" send history "before upgrade $i"; done
"${U[@]}" --identity bob.id send history --topic notes "bob before upgrade"
# A rotation: epoch 2.
"${U[@]}" "${ADMIN[@]}" room rotate history
"${U[@]}" "${ADMIN[@]}" send history "after rotation"
"${U[@]}" "${ADMIN[@]}" room create capped
"${U[@]}" "${ADMIN[@]}" send capped "in the second room"
"${U[@]}" "${ADMIN[@]}" --json room list > rooms.json
kill "$pid"; wait "$pid" 2>/dev/null || true
rm -f server.log
echo "done $store"
