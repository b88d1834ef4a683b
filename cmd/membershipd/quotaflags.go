package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/pflag"

	"github.com/unibus/unibus/internal/daemon"
)

// quotaFlags are the per-user quota flags. Each is 0 for "no limit"; the
// byte quotas also take "auto", a tenth of the file system that holds
// them (the default).
type quotaFlags struct {
	rooms, conns, changes int64
	blob, msg             string
}

func addQuotaFlags(f *pflag.FlagSet) *quotaFlags {
	q := &quotaFlags{}
	f.Int64Var(&q.rooms, "user-rooms", daemon.DefaultUserRooms, "rooms each user may create, for ever (rooms are never deleted); more get 403 quota_exceeded (0 = no limit)")
	f.StringVar(&q.blob, "user-blob-bytes", "auto", "blob bytes each user may upload, for ever (blobs are never deleted): a number of bytes, auto (a tenth of the file system that holds the blobs) or 0 (no limit)")
	f.StringVar(&q.msg, "user-msg-bytes", "auto", "bytes of room messages each user may have kept at once (a message counts until its room's max age removes it): a number of bytes, auto (a tenth of the file system of the JetStream store) or 0 (no limit)")
	f.Int64Var(&q.conns, "user-conns", daemon.DefaultUserConns, "data-plane connections each user may hold on one node; more are refused at login (0 = no limit)")
	f.Int64Var(&q.changes, "user-daily-changes", daemon.DefaultUserDailyChanges, "signed changes (POST, PUT, DELETE) each non-admin user may make in a UTC day: each may append to the audit log, which is never pruned; more get 429 quota_exceeded (0 = no limit)")
	return q
}

// apply sets cfg's quotas: 0 on a flag is "none" (negative in Config),
// "auto" the Config default (0).
func (q *quotaFlags) apply(cfg *daemon.Config) error {
	none := func(v int64) int64 {
		if v == 0 {
			return -1
		}
		return v
	}
	if q.rooms < 0 || q.conns < 0 || q.changes < 0 {
		return fmt.Errorf("--user-rooms, --user-conns and --user-daily-changes must be 0 (no limit) or a positive count")
	}
	cfg.UserRooms, cfg.UserConns, cfg.UserDailyChanges = none(q.rooms), int(none(q.conns)), none(q.changes)
	var err error
	if cfg.UserBlobBytes, err = quotaBytesFlag("--user-blob-bytes", q.blob); err != nil {
		return err
	}
	cfg.UserMsgBytes, err = quotaBytesFlag("--user-msg-bytes", q.msg)
	return err
}

func quotaBytesFlag(name, v string) (int64, error) {
	if v == "auto" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s must be a number of bytes, auto or 0 (no limit), not %q", name, v)
	}
	if n == 0 {
		return -1, nil
	}
	return n, nil
}
