package store

import (
	"context"
	"errors"
	"time"
)

// Revoke is the whole revocation: it flips the user's status (from then on
// denied on both planes) and removes the user from every room with the
// rotation marked pending, so that no later epoch is sealed to it. Both the
// API and the offline admin command call it. It returns the updated user and
// the rooms it was removed from.
func Revoke(ctx context.Context, s Store, signPub string, at time.Time) (User, []string, error) {
	u, err := s.RevokeUser(ctx, signPub, at)
	if err != nil {
		return u, nil, err
	}
	rooms, err := s.RoomIDs(ctx, u.SignPub)
	if err != nil {
		return u, nil, err
	}
	for _, r := range rooms {
		if err := s.RemoveMember(ctx, r, u.SignPub, nil); err != nil && !errors.Is(err, ErrNotMember) {
			return u, rooms, err
		}
	}
	return u, rooms, nil
}
