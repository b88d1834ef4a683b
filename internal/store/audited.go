package store

import (
	"context"
	"errors"
	"time"

	"github.com/unibus/unibus/internal/audit"
)

// maxFailDetail bounds the reason recorded for a refused change.
const maxFailDetail = 200

// AuditResult says what Audited appended.
type AuditResult struct {
	// Appended counts the entries appended (0, 1 or 2).
	Appended int
	// FailRecordErr is set when apply failed and the entry saying so could
	// not be appended; the log then shows an attempt that did not apply.
	FailRecordErr error
}

// Audited records rec in the log, then runs apply. The entry is written
// first so that no change is ever made without one: when the log cannot be
// written, apply does not run and the error wraps ErrUnavailable. When
// apply fails, an audit.ActionFailed entry referring to the first records
// it (best effort: if that append fails too, the log shows an attempt that
// did not apply, never a change it does not show), and apply's error is
// returned unchanged.
func Audited(ctx context.Context, log AuditLog, rec audit.Record, now func() time.Time, apply func() error) (AuditResult, error) {
	rec.Time = now()
	e, err := log.AppendAudit(ctx, rec)
	if err != nil {
		if !errors.Is(err, ErrUnavailable) {
			err = errors.Join(ErrUnavailable, err)
		}
		return AuditResult{}, err
	}
	aerr := apply()
	if aerr == nil {
		return AuditResult{Appended: 1}, nil
	}
	reason := aerr.Error()
	if len(reason) > maxFailDetail {
		reason = reason[:maxFailDetail]
	}
	fail := audit.Record{Time: now(), Actor: rec.Actor, Via: rec.Via, Action: audit.ActionFailed,
		Room: rec.Room, Subject: rec.Subject, Detail: reason, Request: rec.Request, Refers: e.Seq}
	if _, err := log.AppendAudit(context.WithoutCancel(ctx), fail); err != nil {
		return AuditResult{Appended: 1, FailRecordErr: err}, aerr
	}
	return AuditResult{Appended: 2}, aerr
}

// AuditedAs is Audited for a caller acting as actor by way of via (the
// admin commands: the host's "local" or the node's internal identity, by
// the CLI), at the current time in UTC. It returns apply's error, joined
// with the error of a failure entry that could not be appended.
func AuditedAs(ctx context.Context, log AuditLog, actor, via string, rec audit.Record, apply func() error) error {
	rec.Actor, rec.Via = actor, via
	res, err := Audited(ctx, log, rec, func() time.Time { return time.Now().UTC() }, apply)
	if res.FailRecordErr != nil {
		return errors.Join(err, res.FailRecordErr)
	}
	return err
}
