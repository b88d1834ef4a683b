package store

import "fmt"

// CheckJoinKeys checks a new member's keys against the room's current
// epoch: all for the member and room, one per epoch, none later than the
// current one, and one for the current one. Both backends use it.
func CheckJoinKeys(m Member, keys []SealedKey, epoch uint64) error {
	seen := map[uint64]bool{}
	for _, k := range keys {
		switch {
		case k.Member != m.SignPub:
			return fmt.Errorf("a key is sealed to %s, not to the new member: %w", k.Member, ErrIncompleteRotation)
		case k.Room != m.Room:
			return fmt.Errorf("a key is for room %s: %w", k.Room, ErrIncompleteRotation)
		case k.Epoch < 1 || k.Epoch > epoch:
			return fmt.Errorf("a key is for epoch %d, the room is at epoch %d: %w", k.Epoch, epoch, ErrIncompleteRotation)
		case seen[k.Epoch]:
			return fmt.Errorf("two keys for epoch %d: %w", k.Epoch, ErrIncompleteRotation)
		}
		seen[k.Epoch] = true
	}
	if !seen[epoch] {
		return fmt.Errorf("no key for the current epoch %d: %w", epoch, ErrIncompleteRotation)
	}
	return nil
}

// CheckCoverage requires exactly one key per member, each for the
// rotation's room and epoch. Both backends use it.
func CheckCoverage(rot Rotation, members map[string]bool) error {
	seen := make(map[string]bool, len(rot.Keys))
	for _, k := range rot.Keys {
		switch {
		case k.Room != rot.Room || k.Epoch != rot.Epoch:
			return fmt.Errorf("a key is for room %s epoch %d: %w", k.Room, k.Epoch, ErrIncompleteRotation)
		case !members[k.Member]:
			return fmt.Errorf("a key is sealed to %s, who is not a member: %w", k.Member, ErrIncompleteRotation)
		case seen[k.Member]:
			return fmt.Errorf("two keys are sealed to %s: %w", k.Member, ErrIncompleteRotation)
		}
		seen[k.Member] = true
	}
	for m := range members {
		if !seen[m] {
			return fmt.Errorf("no key is sealed to member %s: %w", m, ErrIncompleteRotation)
		}
	}
	return nil
}
