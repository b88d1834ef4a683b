package api

import (
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/internal/blobstore"
	"github.com/unibus/unibus/wire"
)

// blobRoom checks that the caller is a member of the path's room. Unlike
// the room endpoints, a non-member gets 403: the blob endpoints say "not
// yours" rather than hiding the room.
func (s *Server) blobRoom(r *http.Request, c *caller) (string, string, error) {
	room, _, isMember, err := s.roomFor(r, c)
	if err != nil {
		if ae := classify(err); ae.status == http.StatusNotFound {
			return "", "", forbidden("only members of the room may transfer its blobs")
		}
		return "", "", err
	}
	if !isMember {
		return "", "", forbidden("only members of the room may transfer its blobs")
	}
	id := r.PathValue("id")
	if !blobstore.ValidID(id) {
		return "", "", badRequest("%v", blobstore.ErrBadID)
	}
	return room.ID, id, nil
}

// putBlob streams an upload into the blob store. The signed Content-Digest
// must be the blob id, and the bytes must hash to it; otherwise nothing is
// stored.
func (s *Server) putBlob(w http.ResponseWriter, r *http.Request, c *caller) error {
	room, id, err := s.blobRoom(r, c)
	if err != nil {
		return err
	}
	if hex.EncodeToString(c.digest) != id {
		return errorf(http.StatusBadRequest, wire.CodeBadDigest, "the signed Content-Digest is not the blob id")
	}
	if r.ContentLength > s.o.BlobMaxSize {
		return errorf(http.StatusRequestEntityTooLarge, wire.CodeTooLarge, "blob is larger than the %d-byte limit", s.o.BlobMaxSize)
	}
	if s.o.DiskLow != nil && s.o.DiskLow(max(r.ContentLength, 0)) {
		return errorf(http.StatusInsufficientStorage, wire.CodeDiskFull, "the server's free disk space is below its reserve: nothing was stored; retry once space is freed")
	}
	// The uploader's quota bounds the upload like the size limit does; a
	// blob the room holds already is not stored again, nor counted again.
	limit, byQuota, existed := s.o.BlobMaxSize, false, false
	if q := s.o.BlobQuota; q != nil {
		_, serr := s.o.Blobs.Stat(r.Context(), room, id)
		existed = serr == nil
		left, err := q.Left(r.Context(), c.user.SignPub)
		if err != nil {
			return s.errLedger(c, err)
		}
		if !existed && left >= 0 {
			if r.ContentLength > left || left == 0 {
				return errQuota(q, "blob bytes", http.StatusInsufficientStorage)
			}
			if left < limit {
				limit, byQuota = left, true
			}
		}
	}
	body := &readErr{r: r.Body}
	info, err := s.o.Blobs.Put(r.Context(), room, id, body, limit)
	switch {
	case errors.Is(err, blobstore.ErrTooLarge) && byQuota:
		return errQuota(s.o.BlobQuota, "blob bytes", http.StatusInsufficientStorage)
	case errors.Is(err, blobstore.ErrTooLarge):
		return errorf(http.StatusRequestEntityTooLarge, wire.CodeTooLarge, "blob is larger than the %d-byte limit", s.o.BlobMaxSize)
	case errors.Is(err, blobstore.ErrDigestMismatch):
		return errorf(http.StatusBadRequest, wire.CodeBadDigest, "the uploaded bytes do not hash to the blob id; nothing was stored")
	case err != nil && body.err != nil:
		// The client's body ended early or too slowly: its fault.
		s.log.Info("blob upload interrupted; nothing stored", "room", room, "blob", id[:16], "err", body.err)
		return badRequest("the upload did not complete; nothing was stored")
	case err != nil && diskFull(err):
		s.log.Error("blob upload failed: no space left; nothing stored", "room", room, "blob", id[:16], "err", err)
		return errorf(http.StatusInsufficientStorage, wire.CodeDiskFull, "the server has no space left for this blob: nothing was stored; retry once space is freed")
	case err != nil:
		s.log.Error("blob upload failed in the blob store; nothing stored", "room", room, "blob", id[:16], "err", err)
		return errorf(http.StatusServiceUnavailable, wire.CodeUnavailable, "the blob store could not store the upload: nothing was stored; retrying is safe")
	}
	if s.o.BlobQuota != nil && !existed {
		if err := s.o.BlobQuota.AddNow(r.Context(), c.user.SignPub, info.Size, time.Time{}); err != nil {
			// The blob is stored: say so; it is not counted.
			s.log.Error("blob stored but not counted against its uploader's quota", "room", room, "blob", id[:16], "by", c.key.Short(), "err", err)
		}
	}
	s.log.Info("blob stored", "room", room, "blob", id[:16], "size", info.Size, "by", c.key.Short())
	writeJSON(w, http.StatusCreated, blobWire(info))
	return nil
}

func blobWire(i blobstore.Info) wire.Blob {
	return wire.Blob{Room: i.Room, ID: i.ID, Size: i.Size, CreatedAt: i.Created}
}

func (s *Server) getBlob(w http.ResponseWriter, r *http.Request, c *caller) error {
	room, id, err := s.blobRoom(r, c)
	if err != nil {
		return err
	}
	rc, info, err := s.o.Blobs.Open(r.Context(), room, id)
	if errors.Is(err, blobstore.ErrNotFound) {
		return errorf(http.StatusNotFound, wire.CodeNotFound, "no such blob in this room")
	}
	if err != nil {
		return err
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(info.Size, 10))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil {
		s.log.Info("blob download interrupted", "room", room, "blob", id[:16], "err", err)
	}
	return nil
}

func (s *Server) statBlob(w http.ResponseWriter, r *http.Request, c *caller) error {
	room, id, err := s.blobRoom(r, c)
	if err != nil {
		return err
	}
	info, err := s.o.Blobs.Stat(r.Context(), room, id)
	if errors.Is(err, blobstore.ErrNotFound) {
		return errorf(http.StatusNotFound, wire.CodeNotFound, "no such blob in this room")
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, blobWire(info))
	return nil
}

// readErr remembers the first error reading the request body gave, so a
// failed upload can be told apart: the client's fault (400) or the
// server's (503, 507).
type readErr struct {
	r   io.Reader
	err error
}

func (b *readErr) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// jsInsufficientResources is nats-server's JSInsufficientResourcesErr: the
// stream cannot store more on this server (its disk or its limit).
const jsInsufficientResources = 10023

// diskFull reports whether a store error is the disk being full: ENOSPC
// from a file, or JetStream's "insufficient resources" from the object
// store.
func diskFull(err error) bool {
	if errors.Is(err, syscall.ENOSPC) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jsInsufficientResources
}
