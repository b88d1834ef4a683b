package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/daemon"
)

// BenchmarkBlob64MiB compares, in one run, an encrypted blob upload+download
// through membershipd (client-side STREAM encryption, signed streamed
// upload, server-side hash check, fsync and rename; download and
// decryption) with a plain HTTP PUT+GET of the same number of bytes to a
// minimal file server on the same machine that also fsyncs. It reports MB/s
// (of plaintext) for both and the ratio.
func BenchmarkBlob64MiB(b *testing.B) {
	const size = 64 << 20
	ctx := context.Background()
	d, err := daemon.Start(ctx, daemon.Config{Bind: "127.0.0.1", DataDir: b.TempDir(), Bootstrap: true})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	adm, _ := identity.Load(d.AdminIDFile)
	c, err := client.Dial(ctx, client.Config{Identity: adm, Servers: []string{d.HTTPURL()}, NATS: []string{d.NATSURL()}})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	room, err := c.CreateRoom(ctx, "bench-blobs")
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, size)
	rand.Read(data)
	plain := plainFileServer(b)

	var encDur, plainDur time.Duration
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		ann, err := c.PutBlob(ctx, room.ID, bytes.NewReader(data), client.BlobMeta{}, nil)
		if err != nil {
			b.Fatal(err)
		}
		if n, err := c.GetBlob(ctx, room.ID, ann, io.Discard, nil); err != nil || n != size {
			b.Fatal(n, err)
		}
		encDur += time.Since(start)

		start = time.Now()
		req, _ := http.NewRequest("PUT", plain.URL+"/x", bytes.NewReader(data))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		resp, err = http.Get(plain.URL + "/x")
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		plainDur += time.Since(start)
	}
	mb := float64(b.N) * size / 1e6
	b.ReportMetric(mb/encDur.Seconds(), "e2e-MB/s")
	b.ReportMetric(mb/plainDur.Seconds(), "plain-MB/s")
	b.ReportMetric(plainDur.Seconds()/encDur.Seconds(), "e2e/plain")
	b.ReportMetric(0, "ns/op")
}

// plainFileServer stores PUT bodies in a file (fsynced) and serves them on GET.
func plainFileServer(b *testing.B) *httptest.Server {
	dir := b.TempDir()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := filepath.Join(dir, "blob")
		switch r.Method {
		case "PUT":
			f, _ := os.Create(p)
			io.Copy(f, r.Body)
			f.Sync()
			f.Close()
			w.WriteHeader(201)
		case "GET":
			http.ServeFile(w, r, p)
		}
	}))
	b.Cleanup(srv.Close)
	return srv
}
