package store

import (
	"context"
	"errors"

	"github.com/unibus/unibus/internal/audit"
)

// AuditPage is how many entries one read of an AuditLog fetches when a
// whole log is listed or verified.
const AuditPage = 500

// errStopPaging ends EachAuditPage early without an error.
var errStopPaging = errors.New("stop paging")

// EachAuditPage calls fn with every page of the log's entries after seq
// after, in order, until the log ends or fn fails.
func EachAuditPage(ctx context.Context, log AuditLog, after uint64, fn func([]audit.Entry) error) error {
	for {
		page, err := log.AuditEntries(ctx, after, AuditPage)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		if err := fn(page); err != nil {
			if errors.Is(err, errStopPaging) {
				return nil
			}
			return err
		}
		after = page[len(page)-1].Seq
	}
}

// ListAudit returns the log's entries after seq after, at most limit of
// them (0: all), as stored (ListAudit does not verify them; VerifyAudit
// does).
func ListAudit(ctx context.Context, log AuditLog, after uint64, limit int) ([]audit.Entry, error) {
	var es []audit.Entry
	err := EachAuditPage(ctx, log, after, func(page []audit.Entry) error {
		for _, e := range page {
			if limit > 0 && len(es) >= limit {
				return errStopPaging
			}
			es = append(es, e)
		}
		return nil
	})
	return es, err
}

// VerifyAudit checks the log's whole hash chain page by page (see
// audit.Verify) and returns its head. found reports whether want, if
// given, is one of its entries: the chain alone cannot show that its
// newest entries were cut off, a head recorded earlier can. When the chain
// is broken the error wraps audit.ErrBroken (or audit.ErrInvalid) and the
// head is the last entry that holds.
func VerifyAudit(ctx context.Context, log AuditLog, want *audit.Head) (head audit.Head, found bool, err error) {
	err = EachAuditPage(ctx, log, 0, func(page []audit.Entry) error {
		h, err := audit.Verify(head, page)
		head = h
		if err != nil {
			return err
		}
		if want != nil {
			for _, e := range page {
				if e.Seq == want.Seq && e.Hash == want.Hash {
					found = true
				}
			}
		}
		return nil
	})
	return head, found, err
}
