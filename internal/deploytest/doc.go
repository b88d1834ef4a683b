// Package deploytest tests unibus's deployment material in deploy/
// (systemd units, the certificate and cluster scripts, the runbooks in
// README.md and cluster/README.md) and the tests that prove it without real
// hosts.
//
// The tests, run by `go test ./...`, lint every script with shellcheck,
// verify both units with systemd-analyze, check the certificate chains
// with openssl, read the dry-run plan of cluster/deploy-cluster.sh, and
// rehearse a three-node cluster on 127.0.0.2-4 from the generated material,
// started exactly as the unit's ExecStart starts a node. They need
// shellcheck, systemd-analyze, openssl and rsync (.ci/install-tools
// installs them); a missing tool fails the tests, unless
// UNIBUS_DEPLOY_OPTIONAL=1 is set, which skips them instead.
package deploytest
