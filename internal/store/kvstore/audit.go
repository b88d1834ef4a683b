package kvstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/internal/audit"
	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/store/jsretry"
)

// The audit log is a plain stream (not a bucket): one subject, one message
// per entry, the stream sequence is the entry's seq. Deletes and purges are
// denied in its configuration, which JetStream never lets an update turn
// back off, and stream deletion is refused node-wide (natsnode), so no
// identity, the internal one included, can remove an entry.
const (
	AuditStream  = "UNIBUS_audit"
	AuditSubject = "unibus.audit"
)

// auditAppendTries bounds the compare-and-set retries of one append under
// contention (every node and admin CLI appends to the same stream).
const auditAppendTries = 32

func (s *Store) auditConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        AuditStream,
		Description: "unibus audit log (hash-chained, append-only)",
		Subjects:    []string{AuditSubject},
		Storage:     jetstream.FileStorage,
		Replicas:    s.o.Replicas,
		MaxMsgSize:  audit.MaxEntryBytes,
		DenyDelete:  true,
		DenyPurge:   true,
		AllowDirect: false,
		Discard:     jetstream.DiscardNew,
	}
}

// openAudit binds the audit stream, creating it when absent. Unlike the
// buckets it is created even by a bind-only (NoCreate) open once the
// buckets exist, so that admin tools keep auditing against a node that
// predates the log.
func (s *Store) openAudit(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, jsretry.AttemptTimeout)
	defer cancel()
	st, err := s.js.Stream(ctx, AuditStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = s.js.CreateStream(ctx, s.auditConfig())
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			st, err = s.js.Stream(ctx, AuditStream)
		}
	}
	if err != nil {
		return err
	}
	if c := st.CachedInfo().Config; !c.DenyDelete || !c.DenyPurge {
		return fmt.Errorf("%w: stream %s allows deletes or purges; it is not an append-only audit log", store.ErrUnavailable, AuditStream)
	}
	s.audit = st
	return nil
}

// AuditStreamHandle returns the audit stream (for replication reports), or
// nil while the store is not open.
func (s *Store) AuditStreamHandle() jetstream.Stream {
	if s.opening.Check() != nil {
		return nil
	}
	return s.audit
}

// AppendAudit implements store.AuditLog: read the newest entry from the
// stream leader, chain r after it, and publish with the stream's expected
// last sequence, so an append that raced another is refused by JetStream
// and retried on the new head.
func (s *Store) AppendAudit(ctx context.Context, r audit.Record) (audit.Entry, error) {
	if err := s.check("audit log"); err != nil {
		return audit.Entry{}, err
	}
	for range auditAppendTries {
		e, err := s.appendAuditOnce(ctx, r)
		if err == nil {
			return e, nil
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			continue
		}
		return audit.Entry{}, fmt.Errorf("audit log: %w", unavailable(err))
	}
	return audit.Entry{}, fmt.Errorf("audit log: %w", unavailable(errors.New("too much contention on the audit stream")))
}

func (s *Store) appendAuditOnce(ctx context.Context, r audit.Record) (audit.Entry, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	var prev *audit.Entry
	m, err := s.audit.GetLastMsgForSubject(ctx, AuditSubject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return audit.Entry{}, err
	default:
		p, err := audit.Unmarshal(m.Data)
		if err != nil {
			return audit.Entry{}, fmt.Errorf("the newest audit entry is corrupt (run membershipd audit verify): %w", err)
		}
		if p.Seq != m.Sequence {
			return audit.Entry{}, fmt.Errorf("the newest audit entry claims seq %d at stream sequence %d: %w", p.Seq, m.Sequence, audit.ErrBroken)
		}
		prev = &p
	}
	e, err := audit.Next(prev, r)
	if err != nil {
		return audit.Entry{}, err
	}
	b, err := audit.Marshal(e)
	if err != nil {
		return audit.Entry{}, err
	}
	if _, err := s.js.Publish(ctx, AuditSubject, b, jetstream.WithExpectStream(AuditStream), jetstream.WithExpectLastSequence(e.Seq-1)); err != nil {
		return audit.Entry{}, err
	}
	return e, nil
}

// AuditEntries implements store.AuditLog, reading from the stream leader.
func (s *Store) AuditEntries(ctx context.Context, after uint64, limit int) ([]audit.Entry, error) {
	if err := s.check("audit log"); err != nil {
		return nil, err
	}
	var out []audit.Entry
	for seq := after + 1; len(out) < limit; seq++ {
		e, err := s.auditEntry(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			// A gap before the last sequence means an entry was removed
			// (deletes are denied, so only by tampering with the store).
			last, ierr := s.auditLastSeq(ctx)
			if ierr != nil {
				return nil, wrapAudit(ierr)
			}
			if seq <= last {
				return nil, fmt.Errorf("audit entry %d is missing from stream %s (last is %d): %w", seq, AuditStream, last, audit.ErrBroken)
			}
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func (s *Store) auditEntry(ctx context.Context, seq uint64) (audit.Entry, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	m, err := s.audit.GetMsg(ctx, seq)
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return audit.Entry{}, err
		}
		return audit.Entry{}, wrapAudit(err)
	}
	e, err := audit.Unmarshal(m.Data)
	if err != nil {
		return audit.Entry{}, fmt.Errorf("audit entry at stream sequence %d: %w", seq, err)
	}
	if e.Seq != seq {
		return audit.Entry{}, fmt.Errorf("stream sequence %d holds entry seq %d: %w", seq, e.Seq, audit.ErrBroken)
	}
	return e, nil
}

func (s *Store) auditLastSeq(ctx context.Context) (uint64, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	info, err := s.audit.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

func wrapAudit(err error) error {
	if errors.Is(err, store.ErrUnavailable) || errors.Is(err, audit.ErrInvalid) || errors.Is(err, audit.ErrBroken) {
		return fmt.Errorf("audit log: %w", err)
	}
	return fmt.Errorf("audit log: %w", unavailable(err))
}
