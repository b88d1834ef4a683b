package client

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"

	"github.com/unibus/unibus/blobcrypt"
	"github.com/unibus/unibus/wire"
)

// blobType is the "type" of a blob announcement's JSON.
const blobType = "unibus.blob"

// BlobMeta describes a blob for its announcement.
type BlobMeta struct {
	Name        string // a file name, for the receivers
	ContentType string // a MIME type, or ""
}

// Progress is called with the number of plaintext bytes processed so far.
type Progress func(done int64)

// PutBlob encrypts r on the client with a fresh key (64 KiB STREAM chunks)
// and uploads the ciphertext to the room, addressed by its SHA-256. It
// returns the announcement that lets another member fetch and decrypt it;
// send it in the room (SendBlob does both). The ciphertext is staged in a
// temporary file so that memory stays bounded whatever the blob's size.
func (c *Client) PutBlob(ctx context.Context, room string, r io.Reader, meta BlobMeta, progress Progress) (BlobAnnouncement, error) {
	key, err := blobcrypt.NewKey()
	if err != nil {
		return BlobAnnouncement{}, err
	}
	tmp, err := os.CreateTemp("", "unibus-blob-*")
	if err != nil {
		return BlobAnnouncement{}, fmt.Errorf("stage blob: %w", err)
	}
	defer func() { tmp.Close(); os.Remove(tmp.Name()) }()
	h := sha256.New()
	enc, err := blobcrypt.NewWriter(io.MultiWriter(tmp, h), key)
	if err != nil {
		return BlobAnnouncement{}, err
	}
	size, err := io.Copy(enc, &progressReader{r: r, fn: progress})
	if err != nil {
		return BlobAnnouncement{}, fmt.Errorf("read blob: %w", err)
	}
	if err := enc.Close(); err != nil {
		return BlobAnnouncement{}, err
	}
	sum := h.Sum(nil)
	id := hex.EncodeToString(sum)
	ctSize, err := tmp.Seek(0, io.SeekCurrent)
	if err != nil {
		return BlobAnnouncement{}, err
	}
	var out wire.Blob
	err = c.doStream(ctx, "PUT", "/v1/rooms/"+room+"/blobs/"+id, func() (io.Reader, error) {
		_, err := tmp.Seek(0, io.SeekStart)
		return tmp, err
	}, ctSize, sum, &out)
	if err != nil {
		return BlobAnnouncement{}, err
	}
	return BlobAnnouncement{ID: id, Key: key[:], Name: meta.Name, Size: size, ContentType: meta.ContentType}, nil
}

// SendBlob uploads r and announces it in the room on topic; it returns the
// announcement.
func (c *Client) SendBlob(ctx context.Context, room, topic string, r io.Reader, meta BlobMeta, progress Progress) (BlobAnnouncement, error) {
	ann, err := c.PutBlob(ctx, room, r, meta, progress)
	if err != nil {
		return ann, err
	}
	body, err := json.Marshal(ann.toWire())
	if err != nil {
		return ann, err
	}
	_, err = c.Send(ctx, room, topic, body)
	return ann, err
}

// ParseBlobAnnouncement returns the announcement a message carries, if any.
func ParseBlobAnnouncement(data []byte) (BlobAnnouncement, bool) {
	var a wire.BlobAnnouncement
	if len(data) == 0 || data[0] != '{' || json.Unmarshal(data, &a) != nil || a.Type != blobType || len(a.Key) != 32 {
		return BlobAnnouncement{}, false
	}
	return announcementFromWire(a), true
}

// ErrBlobCorrupt is returned when downloaded bytes do not hash to the blob id.
var ErrBlobCorrupt = errors.New("downloaded blob does not hash to its id")

// GetBlob downloads the announced blob and writes its plaintext to w,
// streaming: only authenticated chunks are written, and a truncated,
// reordered or altered ciphertext fails with an error (what was written to
// w before then is authenticated plaintext of the blob's start).
func (c *Client) GetBlob(ctx context.Context, room string, ann BlobAnnouncement, w io.Writer, progress Progress) (int64, error) {
	if len(ann.Key) != 32 {
		return 0, fmt.Errorf("blob announcement has no valid key")
	}
	var key blobcrypt.Key
	copy(key[:], ann.Key)
	resp, err := c.doRaw(ctx, "GET", "/v1/rooms/"+room+"/blobs/"+ann.ID)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	h := sha256.New()
	dec, err := blobcrypt.NewReader(io.TeeReader(resp.Body, h), key)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(w, &progressReader{r: dec, fn: progress})
	if err != nil {
		return n, fmt.Errorf("blob %s: %w", short(ann.ID), err)
	}
	if !hashIs(h, ann.ID) {
		return n, ErrBlobCorrupt
	}
	return n, nil
}

func hashIs(h hash.Hash, id string) bool {
	want, err := hex.DecodeString(id)
	return err == nil && subtle.ConstantTimeCompare(h.Sum(nil), want) == 1
}

// FindBlob looks through the room's stored messages for the announcement
// of blob id.
func (c *Client) FindBlob(ctx context.Context, room, id string) (BlobAnnouncement, error) {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var found BlobAnnouncement
	err := c.Listen(lctx, room, ListenOptions{FromStart: true, OnError: func(error) {}, caughtUp: cancel}, func(m Message) {
		if a, ok := ParseBlobAnnouncement(m.Data); ok && a.ID == id {
			found = a
			cancel()
		}
	})
	if err != nil {
		return found, err
	}
	if found.ID == "" {
		if ctx.Err() != nil {
			return found, ctx.Err()
		}
		return found, fmt.Errorf("no announcement of blob %s in the room (you can only fetch blobs announced in rooms you can read)", id)
	}
	return found, nil
}

type progressReader struct {
	r    io.Reader
	n    int64
	fn   Progress
	last int64
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if p.fn != nil && (p.n-p.last >= 1<<20 || err == io.EOF) {
		p.last = p.n
		p.fn(p.n)
	}
	return n, err
}

// doStream sends a signed request whose body (of size bytes, SHA-256 sum)
// is streamed from body(); body is called again for each server tried.
func (c *Client) doStream(ctx context.Context, method, path string, body func() (io.Reader, error), size int64, sum []byte, out any) error {
	resp, err := c.roundTrip(ctx, c.blobHTTP, func(base string) (*http.Request, error) {
		rd, err := body()
		if err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, method, base+path, io.NopCloser(rd))
		if err != nil {
			return nil, err
		}
		req.ContentLength = size
		req.Header.Set("Content-Type", "application/octet-stream")
		return req, c.signer.SignDigest(req, sum)
	})
	if err != nil {
		return err
	}
	return decodeResponse(resp, out)
}

// doRaw sends a signed bodiless request and returns the response for the
// caller to stream (non-2xx answers are decoded into an *APIError).
func (c *Client) doRaw(ctx context.Context, method, path string) (*http.Response, error) {
	resp, err := c.roundTrip(ctx, c.blobHTTP, func(base string) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, method, base+path, nil)
		if err != nil {
			return nil, err
		}
		return req, c.signer.Sign(req, nil)
	})
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		return nil, decodeResponse(resp, nil)
	}
	return resp, nil
}
