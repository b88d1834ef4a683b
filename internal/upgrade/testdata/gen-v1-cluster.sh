#!/usr/bin/env bash
# Writes the state of a three-node kv cluster made by the previous protocol (protocol 1,
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
out="$1"; bin=/tmp/v1bin
rm -rf "$out"; mkdir -p "$out"/n1 "$out"/n2 "$out"/n3; cd "$out"
printf 'fixture-route-secret\n' > cluster.pass; chmod 600 cluster.pass
pids=()
for i in 1 2 3; do
  routes=""
  for j in 1 2 3; do [ $j = $i ] || routes="${routes:+$routes,}nats://127.0.0.1:1626$j"; done
  (cd n$i && exec "$bin/membershipd" --http-port 1847$i --nats-port 1425$i --store kv --kv-replicas 3 --no-bootstrap \
    --cluster-name unibus-fixture --node-name n$i --cluster-port 1626$i --routes "$routes" \
    --cluster-pass-file ../cluster.pass >server.log 2>&1) &
  pids+=($!)
done
for i in 1 2 3; do for k in $(seq 1 300); do curl -fsS http://127.0.0.1:1847$i/healthz >/dev/null 2>&1 && break; sleep 0.2; done; done
ADMINPUB=$("$bin/unibus" keygen -o admin.id)
"$bin/membershipd" user add --store kv --nats-url nats://127.0.0.1:14251 --internal-id-file n1/local_files/internal.id --kv-replicas 3 --handle admin --role admin --sign-pub "$ADMINPUB"
U=("$bin/unibus" --server http://127.0.0.1:18471,http://127.0.0.1:18472 --nats nats://127.0.0.1:14251,nats://127.0.0.1:14252)
"${U[@]}" --identity admin.id register
BOB=$("${U[@]}" keygen -o bob.id)
"${U[@]}" --identity admin.id user add --handle bob --sign-pub "$BOB"
"${U[@]}" --identity bob.id register
"${U[@]}" --identity admin.id room create history
"${U[@]}" --identity admin.id room add history bob
for i in 1 2 3; do "${U[@]}" --identity admin.id send history "before upgrade $i"; done
"${U[@]}" --identity bob.id send history --topic notes "bob before upgrade"
"${U[@]}" --identity admin.id room rotate history
"${U[@]}" --identity admin.id send history "after rotation"
"${U[@]}" --identity admin.id --json room list > rooms.json
for p in "${pids[@]}"; do kill "$p"; done
wait 2>/dev/null || true
rm -f n*/server.log
echo done cluster
