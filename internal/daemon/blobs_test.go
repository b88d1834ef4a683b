package daemon_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/unibus/unibus/httpsig"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/blobstore/objblobs"
	"github.com/unibus/unibus/internal/daemon"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/wire"
)

// putBlob uploads data as blob id (the signed digest is digest) as id's user.
func putBlob(t *testing.T, b *bus, who *identity.Identity, room, id string, digest, data []byte) (int, wire.ErrorBody) {
	t.Helper()
	req, _ := http.NewRequest("PUT", b.d.HTTPURL()+"/v1/rooms/"+room+"/blobs/"+id, bytes.NewReader(data))
	s := &httpsig.Signer{KeyID: who.SignPub().String(), Key: who.SigningKey(), Tag: b.d.DeploymentTag(context.Background())}
	if err := s.SignDigest(req, digest); err != nil {
		t.Fatal(err)
	}
	return send(t, req, nil)
}

func getBlob(t *testing.T, b *bus, who *identity.Identity, room, id string) (int, []byte) {
	t.Helper()
	req := signed(t, b, "GET", "/v1/rooms/"+room+"/blobs/"+id, nil, who.SignPub().String(), who.SigningKey(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func randomBlob(n int) ([]byte, []byte, string) {
	data := make([]byte, n)
	rand.Read(data)
	sum := sha256.Sum256(data)
	return data, sum[:], hex.EncodeToString(sum[:])
}

// blobFiles lists the files in the blob directory (temporaries included).
func blobFiles(t *testing.T, b *bus) []string {
	var out []string
	filepath.Walk(filepath.Join(b.cfg.DataDir, "blobs"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// stagedBytes is how much of blob uploads the store holds: the files in
// the blob directory (temporaries included), or the bytes of the object
// store's stream (chunks of an upload not yet complete included).
func stagedBytes(ctx context.Context, t *testing.T, b *bus) uint64 {
	if js := daemon.ControlJetStream(b.d); js != nil {
		s, err := js.Stream(ctx, "OBJ_"+objblobs.Bucket)
		if err != nil {
			return 0
		}
		return s.CachedInfo().State.Bytes
	}
	return uint64(len(blobFiles(t, b)))
}

func TestBlobAccessAndIntegrity(t *testing.T) { forEachStore(t, testBlobAccessAndIntegrity) }

func testBlobAccessAndIntegrity(t *testing.T, kind storeKind) {
	b := startBus(t, storeOption(kind), withConfig(func(c *daemon.Config) { c.BlobMaxSize = 1 << 20 }))
	ctx := ctxT(t)
	aliceID, alice := b.user(t, "alice")
	bobID, _ := b.user(t, "bob")
	malloryID, _ := b.user(t, "mallory")
	room, err := alice.CreateRoom(ctx, "files")
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.AddMember(ctx, room.ID, "bob", "member"); err != nil {
		t.Fatal(err)
	}
	data, sum, id := randomBlob(200 << 10)
	if code, e := putBlob(t, b, aliceID, room.ID, id, sum, data); code != 201 {
		t.Fatalf("member upload: %d %+v", code, e)
	}
	if code, got := getBlob(t, b, bobID, room.ID, id); code != 200 || !bytes.Equal(got, data) {
		t.Fatalf("member download: %d", code)
	}
	// A non-member: 403 both ways.
	if code, _ := getBlob(t, b, malloryID, room.ID, id); code != 403 {
		t.Fatalf("non-member download: %d", code)
	}
	d2, s2, id2 := randomBlob(1000)
	if code, e := putBlob(t, b, malloryID, room.ID, id2, s2, d2); code != 403 {
		t.Fatalf("non-member upload: %d %+v", code, e)
	}
	before := len(blobFiles(t, b))
	// Bytes that do not match the signed digest: refused, nothing kept.
	other, _, _ := randomBlob(1000)
	if code, e := putBlob(t, b, aliceID, room.ID, id2, s2, other); code != 400 || e.Code != wire.CodeBadDigest {
		t.Fatalf("mismatched bytes: %d %+v", code, e)
	}
	// A signed digest that is not the id in the path: refused.
	if code, e := putBlob(t, b, aliceID, room.ID, id, s2, d2); code != 400 || e.Code != wire.CodeBadDigest {
		t.Fatalf("digest not the id: %d %+v", code, e)
	}
	// Over the size limit: 413 (announced by Content-Length and when streamed).
	big, bs, bid := randomBlob(1<<20 + 1)
	if code, e := putBlob(t, b, aliceID, room.ID, bid, bs, big); code != 413 || e.Code != wire.CodeTooLarge {
		t.Fatalf("oversized: %d %+v", code, e)
	}
	if after := blobFiles(t, b); len(after) != before {
		t.Fatalf("refused uploads left files: %v", after)
	}
	// A removed member cannot download blobs announced after its removal
	// (nor before: membership is checked on every transfer).
	if err := alice.RemoveMember(ctx, room.ID, "bob"); err != nil {
		t.Fatal(err)
	}
	if code, e := putBlob(t, b, aliceID, room.ID, id2, s2, d2); code != 201 {
		t.Fatalf("upload after removal: %d %+v", code, e)
	}
	if code, _ := getBlob(t, b, bobID, room.ID, id2); code != 403 {
		t.Fatalf("removed member downloaded a new blob: %d", code)
	}
}

// TestBlobInterruptedUpload cuts the connection halfway through an upload:
// nothing becomes visible and no temporary file remains.
func TestBlobInterruptedUpload(t *testing.T) { forEachStore(t, testBlobInterruptedUpload) }

func testBlobInterruptedUpload(t *testing.T, kind storeKind) {
	b := startBus(t, storeOption(kind))
	ctx := ctxT(t)
	aliceID, alice := b.user(t, "alice")
	room, err := alice.CreateRoom(ctx, "files")
	if err != nil {
		t.Fatal(err)
	}
	data, sum, id := randomBlob(4 << 20)
	req, _ := http.NewRequest("PUT", b.d.HTTPURL()+"/v1/rooms/"+room.ID+"/blobs/"+id, nil)
	(&httpsig.Signer{KeyID: aliceID.SignPub().String(), Key: aliceID.SigningKey(), Tag: b.d.DeploymentTag(ctx)}).SignDigest(req, sum)
	u, _ := url.Parse(b.d.HTTPURL())
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	var head bytes.Buffer
	head.WriteString("PUT " + req.URL.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nContent-Length: " + strconv.Itoa(len(data)) + "\r\n")
	req.Header.Write(&head)
	head.WriteString("\r\n")
	conn.Write(head.Bytes())
	conn.Write(data[:len(data)/2])
	harness.Eventually(t, 5*time.Second, func() bool { return stagedBytes(ctx, t, b) > 0 },
		"the server streaming the upload to its store")
	conn.Close()
	harness.Eventually(t, 5*time.Second, func() bool { return len(blobFiles(t, b)) == 0 },
		"interrupted upload's files removed (left %v)", blobFiles(t, b))
	if code, _ := getBlob(t, b, aliceID, room.ID, id); code != 404 {
		t.Fatalf("interrupted blob is visible: %d", code)
	}
}
