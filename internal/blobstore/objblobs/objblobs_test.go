package objblobs_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/internal/blobstore"
	"github.com/unibus/unibus/internal/blobstore/blobtest"
	"github.com/unibus/unibus/internal/blobstore/objblobs"
	"github.com/unibus/unibus/internal/store/jsretry/jsretrytest"
	"github.com/unibus/unibus/internal/testnode"
)

func TestConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blobtest.Backend {
		n := testnode.Start(t, "")
		s, err := objblobs.Open(t.Context(), n.Control(t), objblobs.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return blobtest.Backend{Store: s, Stored: func() int {
			info, err := s.Stream().Info(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			return int(info.State.Msgs)
		}}
	}, func(t *testing.T) blobstore.Store {
		// A server without JetStream never lets the store open.
		return objblobs.New(jsretrytest.NoJetStream(t), objblobs.Options{Bootstrap: 10 * time.Minute})
	})
}

func TestDirectGetsOff(t *testing.T) {
	n := testnode.Start(t, "")
	s, err := objblobs.Open(t.Context(), n.Control(t), objblobs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	info, err := s.Stream().Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.AllowDirect || info.Config.Storage != jetstream.FileStorage {
		t.Errorf("object store config: direct %v storage %v", info.Config.AllowDirect, info.Config.Storage)
	}
}
