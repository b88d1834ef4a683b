package storetest

import (
	"errors"
	"sync"
	"testing"

	"github.com/unibus/unibus/internal/store"
)

var rotationTests = []test{
	{"Rotate", testRotate},
	{"RotateRefused", testRotateRefused},
	{"RotateClearsRotationPending", testRotateClearsRotationPending},
	{"RotateConcurrent", testRotateConcurrent},
}

func testRotate(f *fixture) {
	us := f.users("alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	id := f.createRoom("ops", alice, bob, carol)
	for epoch := uint64(2); epoch <= 3; epoch++ {
		keys := keysFor(id, epoch, alice, carol, alice, bob) // any order
		rot := store.Rotation{Room: id, Epoch: epoch, By: alice, Reason: store.EpochRotate, Keys: keys, At: at(int(epoch) * 10)}
		if err := f.s.Rotate(f.ctx, rot); err != nil {
			f.t.Fatalf("Rotate(%d): %v", epoch, err)
		}
		if r := f.room(id); r.Epoch != epoch || r.RotationPending {
			f.t.Errorf("after Rotate(%d): epoch %d, pending %v", epoch, r.Epoch, r.RotationPending)
		}
		for _, k := range keys {
			ks, err := f.s.SealedKeys(f.ctx, id, k.Member)
			if err != nil {
				f.t.Fatalf("SealedKeys: %v", err)
			}
			if len(ks) != int(epoch) {
				f.t.Fatalf("member %s has %d keys at epoch %d", k.Member[:8], len(ks), epoch)
			}
			checkKeys(f.t, ks[epoch-1:], []store.SealedKey{k})
		}
		eps, err := f.s.Epochs(f.ctx, id)
		if err != nil {
			f.t.Fatalf("Epochs: %v", err)
		}
		if len(eps) != int(epoch) {
			f.t.Fatalf("%d epoch records at epoch %d", len(eps), epoch)
		}
		checkEpoch(f.t, eps[epoch-1], store.Epoch{Room: id, Epoch: epoch, CreatedBy: alice, Reason: store.EpochRotate, CreatedAt: rot.At})
	}
	if n := len(f.memberIDs(id)); n != 3 {
		f.t.Errorf("rotation changed membership: %d members", n)
	}
}

func testRotateRefused(f *fixture) {
	us := f.users("alice", "bob", "carol", "dave")
	alice, bob, carol, dave := us[0], us[1], us[2], us[3]
	id := f.createRoom("ops", alice, bob, carol)
	f.rotate(id, alice, alice, bob, carol) // the room is at epoch 2

	dup := sealedKey(id, 3, bob, alice, 1)
	wrongEpoch := sealedKey(id, 4, carol, alice, 0)
	cases := []struct {
		name  string
		epoch uint64
		keys  []store.SealedKey
		want  error
	}{
		{"current epoch", 2, keysFor(id, 2, alice, alice, bob, carol), store.ErrStaleEpoch},
		{"earlier epoch", 1, keysFor(id, 1, alice, alice, bob, carol), store.ErrStaleEpoch},
		{"epoch zero", 0, keysFor(id, 0, alice, alice, bob, carol), store.ErrStaleEpoch},
		{"skips an epoch", 4, keysFor(id, 4, alice, alice, bob, carol), store.ErrStaleEpoch},
		{"no keys", 3, nil, store.ErrIncompleteRotation},
		{"missing a member", 3, keysFor(id, 3, alice, alice, bob), store.ErrIncompleteRotation},
		{"extra non-member", 3, keysFor(id, 3, alice, alice, bob, carol, dave), store.ErrIncompleteRotation},
		{"extra unregistered", 3, keysFor(id, 3, alice, alice, bob, carol, signPub("nobody")), store.ErrIncompleteRotation},
		{"non-member instead of member", 3, keysFor(id, 3, alice, alice, bob, dave), store.ErrIncompleteRotation},
		{"duplicate", 3, append(keysFor(id, 3, alice, alice, bob, carol), dup), store.ErrIncompleteRotation},
		{"duplicate instead of member", 3, append(keysFor(id, 3, alice, alice, bob), dup), store.ErrIncompleteRotation},
		{"key for another epoch", 3, append(keysFor(id, 3, alice, alice, bob), wrongEpoch), store.ErrIncompleteRotation},
	}
	for _, tc := range cases {
		f.t.Run(tc.name, func(t *testing.T) {
			f := f.sub(t)
			before := f.snap(id, alice, bob, carol, dave)
			rot := store.Rotation{Room: id, Epoch: tc.epoch, By: alice, Reason: store.EpochRotate, Keys: tc.keys, At: at(20)}
			wantErr(t, "Rotate", f.s.Rotate(f.ctx, rot), tc.want)
			f.unchanged(before)
		})
	}
	// The refusals left the room able to move to epoch 3.
	f.rotate(id, alice, alice, bob, carol)
}

func testRotateClearsRotationPending(f *fixture) {
	us := f.users("alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	id := f.createRoom("ops", alice, bob, carol)
	if err := f.s.RemoveMember(f.ctx, id, carol, nil); err != nil {
		f.t.Fatalf("RemoveMember(nil): %v", err)
	}
	if r := f.room(id); !r.RotationPending || r.Epoch != 1 {
		f.t.Fatalf("after an admin removal: epoch %d, pending %v; want 1, true", r.Epoch, r.RotationPending)
	}
	// A refused rotation leaves the rotation pending.
	bad := store.Rotation{Room: id, Epoch: 2, By: bob, Reason: store.EpochPending, Keys: keysFor(id, 2, bob, alice, bob, carol), At: at(5)}
	wantErr(f.t, "Rotate covering the removed member", f.s.Rotate(f.ctx, bad), store.ErrIncompleteRotation)
	if r := f.room(id); !r.RotationPending {
		f.t.Fatal("a refused rotation cleared RotationPending")
	}
	rot := store.Rotation{Room: id, Epoch: 2, By: bob, Reason: store.EpochPending, Keys: keysFor(id, 2, bob, alice, bob), At: at(6)}
	if err := f.s.Rotate(f.ctx, rot); err != nil {
		f.t.Fatalf("Rotate: %v", err)
	}
	if r := f.room(id); r.RotationPending || r.Epoch != 2 {
		f.t.Errorf("after the pending rotation: epoch %d, pending %v; want 2, false", r.Epoch, r.RotationPending)
	}
	eps, err := f.s.Epochs(f.ctx, id)
	if err != nil || len(eps) != 2 {
		f.t.Fatalf("Epochs: %d records, %v", len(eps), err)
	}
	checkEpoch(f.t, eps[1], store.Epoch{Room: id, Epoch: 2, CreatedBy: bob, Reason: store.EpochPending, CreatedAt: at(6)})
}

// Eight owners rotate to the same next epoch at once: exactly one wins, the
// others see ErrStaleEpoch, and the stored keys are all the winner's.
func testRotateConcurrent(f *fixture) {
	const n = 8
	handles := []string{"o0", "o1", "o2", "o3", "o4", "o5", "o6", "o7"}
	owners := f.users(handles...)
	id := f.createRoom("ops", owners[0], owners[1:]...)

	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			keys := make([]store.SealedKey, 0, n)
			for _, m := range owners {
				keys = append(keys, sealedKey(id, 2, m, owners[i], i))
			}
			<-start
			errs[i] = f.s.Rotate(f.ctx, store.Rotation{Room: id, Epoch: 2, By: owners[i], Reason: store.EpochRotate, Keys: keys, At: at(10 + i)})
		})
	}
	close(start)
	wg.Wait()

	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			f.t.Errorf("rotations %d and %d both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, store.ErrStaleEpoch):
			f.t.Errorf("rotation %d: %v, want nil or ErrStaleEpoch", i, err)
		}
	}
	if winner < 0 {
		f.t.Fatal("no rotation succeeded")
	}
	if r := f.room(id); r.Epoch != 2 {
		f.t.Errorf("room at epoch %d, want 2", r.Epoch)
	}
	eps, err := f.s.Epochs(f.ctx, id)
	if err != nil || len(eps) != 2 {
		f.t.Fatalf("Epochs: %d records, %v; want 2", len(eps), err)
	}
	checkEpoch(f.t, eps[1], store.Epoch{Room: id, Epoch: 2, CreatedBy: owners[winner], Reason: store.EpochRotate, CreatedAt: at(10 + winner)})
	for _, m := range owners {
		ks, err := f.s.SealedKeys(f.ctx, id, m)
		if err != nil {
			f.t.Fatalf("SealedKeys: %v", err)
		}
		if len(ks) != 2 {
			f.t.Fatalf("member %s has %d keys, want 2", m[:8], len(ks))
		}
		checkKeys(f.t, ks[1:], []store.SealedKey{sealedKey(id, 2, m, owners[winner], winner)})
	}
}
