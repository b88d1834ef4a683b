package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/unibus/unibus/client"
)

// BlobResult is one blob transfer direction, in MB/s of plaintext.
type BlobResult struct {
	// Path is "unibus upload" (encrypt on the client, signed streamed PUT,
	// server hash check, fsync, rename), "unibus download" (GET, decrypt,
	// hash check), "plain PUT" (an HTTP server in the bench process that
	// writes and fsyncs the body), "plain GET", or "file copy" (write and
	// fsync a file, then read it back: the disk's own bound).
	Path  string  `json:"path"`
	Bytes int64   `json:"bytes"`
	Runs  int     `json:"runs"`
	MBps  float64 `json:"mb_per_s"`
	Ratio float64 `json:"ratio,omitempty"` // unibus over plain, same direction
}

// Blob paths.
const (
	BlobUp        = "unibus upload"
	BlobDown      = "unibus download"
	BlobPlainPut  = "plain PUT"
	BlobPlainGet  = "plain GET"
	BlobFileWrite = "file write+fsync"
	BlobFileRead  = "file read"
)

// Blobs moves a blob of size bytes up and down through unibus and through
// a plain HTTP file server, at least once each and for about d.
func (f *fixture) Blobs(ctx context.Context, size int64, d time.Duration) ([]BlobResult, error) {
	data := make([]byte, size)
	rand.Read(data)
	r, err := f.room(ctx, "bench-blobs")
	if err != nil {
		return nil, err
	}
	room := r.ID
	dir, err := os.MkdirTemp("", "unibus-bench-blob-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	plain, stop, err := plainFileServer(dir)
	if err != nil {
		return nil, err
	}
	defer stop()
	hc := f.httpClient()

	var up, down, put, get, fw, fr time.Duration
	runs := 0
	for start := time.Now(); runs == 0 || time.Since(start) < d; runs++ {
		t := time.Now()
		ann, err := f.admC.PutBlob(ctx, room, bytes.NewReader(data), client.BlobMeta{Name: "bench"}, nil)
		if err != nil {
			return nil, fmt.Errorf("put blob: %w", err)
		}
		up += time.Since(t)
		t = time.Now()
		n, err := f.rxC.GetBlob(ctx, room, ann, io.Discard, nil)
		if err != nil || n != size {
			return nil, fmt.Errorf("get blob: %d of %d bytes: %v", n, size, err)
		}
		down += time.Since(t)

		t = time.Now()
		if err := plainPut(ctx, hc, plain+"/blob", data); err != nil {
			return nil, err
		}
		put += time.Since(t)
		t = time.Now()
		if n, err := plainGet(ctx, hc, plain+"/blob"); err != nil || n != size {
			return nil, fmt.Errorf("plain get: %d of %d bytes: %v", n, size, err)
		}
		get += time.Since(t)

		t = time.Now()
		p := filepath.Join(dir, "copy")
		if err := writeSync(p, data); err != nil {
			return nil, err
		}
		fw += time.Since(t)
		t = time.Now()
		if b, err := os.ReadFile(p); err != nil || int64(len(b)) != size {
			return nil, fmt.Errorf("read back: %v", err)
		}
		fr += time.Since(t)
	}
	mbps := func(t time.Duration) float64 { return float64(size) * float64(runs) / 1e6 / t.Seconds() }
	out := []BlobResult{
		{Path: BlobUp, MBps: mbps(up), Ratio: put.Seconds() / up.Seconds()},
		{Path: BlobPlainPut, MBps: mbps(put)},
		{Path: BlobDown, MBps: mbps(down), Ratio: get.Seconds() / down.Seconds()},
		{Path: BlobPlainGet, MBps: mbps(get)},
		{Path: BlobFileWrite, MBps: mbps(fw)},
		{Path: BlobFileRead, MBps: mbps(fr)},
	}
	for i := range out {
		out[i].Bytes, out[i].Runs = size, runs
	}
	return out, nil
}

func writeSync(p string, data []byte) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	return errors.Join(werr, serr, f.Close())
}

// plainFileServer serves PUT (write, fsync) and GET of files in dir on a
// random loopback port.
func plainFileServer(dir string) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := filepath.Join(dir, "plain-"+filepath.Base(r.URL.Path))
		switch r.Method {
		case "PUT":
			f, err := os.Create(p)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			_, cerr := io.Copy(f, r.Body)
			if err := errors.Join(cerr, f.Sync(), f.Close()); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			w.WriteHeader(http.StatusCreated)
		case "GET":
			http.ServeFile(w, r, p)
		default:
			http.Error(w, "method", http.StatusMethodNotAllowed)
		}
	})}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

func plainPut(ctx context.Context, hc *http.Client, url string, data []byte) error {
	req, err := http.NewRequestWithContext(ctx, "PUT", url, bytes.NewReader(data))
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("plain put: %s", resp.Status)
	}
	return nil
}

func plainGet(ctx context.Context, hc *http.Client, url string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("plain get: %s", resp.Status)
	}
	return io.Copy(io.Discard, resp.Body)
}
