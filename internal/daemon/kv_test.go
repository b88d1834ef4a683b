package daemon_test

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/daemon"
	"github.com/unibus/unibus/internal/store/kvstore"
	"github.com/unibus/unibus/wire"
)

// When the nonce write fails (in a cluster: no quorum for the nonces
// bucket) a signed request is denied with 503 and changes nothing, even
// though everything else the request needs is readable. Here the nonces
// bucket is made to refuse writes (a 1-byte size limit with discard-new),
// which JetStream answers with an error exactly as it does without quorum.
func TestNonceWriteFailureDenies503(t *testing.T) {
	b := startBus(t, storeOption(daemon.StoreKV))
	internal, err := identity.Load(filepath.Join(b.cfg.DataDir, "internal.id"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(b.d.NATSURL(), nats.Nkey(internal.NKey(), internal.SignNonce))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	stream, err := js.Stream(ctxT(t), "KV_"+kvstore.BucketNonces)
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	broken := cfg
	broken.MaxBytes, broken.Discard = 1, jetstream.DiscardNew
	if _, err := js.UpdateStream(ctxT(t), broken); err != nil {
		t.Fatal(err)
	}

	id, _ := identity.Generate()
	body, _ := json.Marshal(wire.AddUserRequest{Handle: "eve", SignPub: id.SignPub().String(), Role: "admin"})
	before := userCount(t, b)
	req := signed(t, b, "POST", "/v1/users", body, b.adm.SignPub().String(), b.adm.SigningKey(), nil)
	if code, e := send(t, req, body); code != http.StatusServiceUnavailable || e.Code != wire.CodeUnavailable {
		t.Fatalf("signed request with the nonce store failing: %d %+v, want 503", code, e)
	}
	if after := userCount(t, b); after != before {
		t.Fatalf("a request denied for its nonce changed the store: %d users, then %d", before, after)
	}
	if _, err := js.UpdateStream(ctxT(t), cfg); err != nil {
		t.Fatal(err)
	}
	req = signed(t, b, "POST", "/v1/users", body, b.adm.SignPub().String(), b.adm.SigningKey(), nil)
	if code, e := send(t, req, body); code != http.StatusCreated {
		t.Fatalf("after the nonce store recovered: %d %+v", code, e)
	}
}
