package main

import (
	"time"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/wire"
)

// The --json output of the commands that print a user or a room is the
// control plane's own JSON for it (package wire), so that a script reads
// the same fields from unibus as from the API. A nil list stays nil
// (printed as null).

func userJSON(u client.User) wire.User {
	return wire.User{SignPub: u.SignPub, Handle: u.Handle, Role: string(u.Role), Status: string(u.Status),
		KEMPub: u.KEMPub, KEMSig: u.KEMSig, CreatedAt: u.CreatedAt}
}

func usersJSON(us []client.User) []wire.User {
	if us == nil {
		return nil
	}
	out := make([]wire.User, len(us))
	for i, u := range us {
		out[i] = userJSON(u)
	}
	return out
}

func roomJSON(r client.Room) wire.Room {
	return wire.Room{ID: r.ID, Name: r.Name, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt, Epoch: r.Epoch,
		RotationPending: r.RotationPending, MaxAgeSeconds: int64(r.MaxAge / time.Second), MaxBytes: r.MaxBytes, Shared: r.Shared}
}

func roomsJSON(rs []client.Room) []wire.Room {
	if rs == nil {
		return nil
	}
	out := make([]wire.Room, len(rs))
	for i, r := range rs {
		out[i] = roomJSON(r)
	}
	return out
}

func roomInfoJSON(ri client.RoomInfo) wire.RoomInfo {
	out := wire.RoomInfo{Room: roomJSON(ri.Room)}
	if ri.Members != nil {
		out.Members = make([]wire.Member, len(ri.Members))
		for i, m := range ri.Members {
			out.Members[i] = wire.Member{SignPub: m.SignPub, Handle: m.Handle, Role: string(m.Role), Status: string(m.Status),
				KEMPub: m.KEMPub, KEMSig: m.KEMSig}
		}
	}
	if ri.Epochs != nil {
		out.Epochs = make([]wire.Epoch, len(ri.Epochs))
		for i, e := range ri.Epochs {
			out.Epochs[i] = wire.Epoch{Epoch: e.Epoch, CreatedBy: e.CreatedBy, Reason: string(e.Reason), CreatedAt: e.CreatedAt}
		}
	}
	return out
}
