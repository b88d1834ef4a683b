package objblobs_test

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/internal/blobstore/blobtest"
	"github.com/unibus/unibus/internal/blobstore/objblobs"
	"github.com/unibus/unibus/internal/testnode"
)

func TestConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blobtest.Backend {
		n := testnode.Start(t, "")
		s, err := objblobs.Open(t.Context(), n.Control(t), objblobs.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return blobtest.Backend{Store: s, Stored: func() int {
			info, err := s.Stream().Info(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			return int(info.State.Msgs)
		}}
	})
}

func TestDirectGetsOff(t *testing.T) {
	n := testnode.Start(t, "")
	s, err := objblobs.Open(t.Context(), n.Control(t), objblobs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Stream().Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.AllowDirect || info.Config.Storage != jetstream.FileStorage {
		t.Errorf("object store config: direct %v storage %v", info.Config.AllowDirect, info.Config.Storage)
	}
}
