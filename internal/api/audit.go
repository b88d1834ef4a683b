package api

import (
	"context"
	"encoding/hex"

	"github.com/unibus/unibus/internal/audit"
	"github.com/unibus/unibus/internal/store"
)

// audited records rec (by the caller, through the API, naming the signed
// request) in the audit log before apply runs; see store.Audited. A log
// that cannot be written refuses the request with 503 and changes nothing.
func (s *Server) audited(ctx context.Context, c *caller, rec audit.Record, apply func() error) error {
	rec.Actor, rec.Via, rec.Request = c.user.SignPub, audit.ViaAPI, c.request
	res, err := store.Audited(ctx, s.o.Store, rec, s.o.Now, apply)
	s.o.Metrics.AuditEntries.Add(float64(res.Appended))
	if res.Appended == 0 && err != nil {
		s.log.Error("audit log append failed; change refused", "action", rec.Action, "err", err)
		return &notApplied{err} // the log comes first: nothing was changed
	}
	if res.FailRecordErr != nil {
		s.log.Warn("audit log: recording a refused change failed", "action", rec.Action, "err", res.FailRecordErr)
	}
	return err
}

func requestDigest(d [32]byte) string { return hex.EncodeToString(d[:]) }
