package storetest

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/unibus/unibus/internal/store"
)

var userTests = []test{
	{"AddGetUser", testAddGetUser},
	{"GetUserUnknown", testGetUserUnknown},
	{"ListUsers", testListUsers},
	{"AddUserAlreadyRegistered", testAddUserAlreadyRegistered},
	{"AddUserHandleTaken", testAddUserHandleTaken},
	{"RevokeUser", testRevokeUser},
	{"SetKEMKey", testSetKEMKey},
	{"CountActiveAdmins", testCountActiveAdmins},
}

// checkUser compares a stored user with the one that should be stored.
func checkUser(t *testing.T, got, want store.User) {
	t.Helper()
	if got.SignPub != want.SignPub || got.Handle != want.Handle || got.Role != want.Role || got.Status != want.Status {
		t.Errorf("user: got (%s, %q, %s, %s), want (%s, %q, %s, %s)",
			got.SignPub, got.Handle, got.Role, got.Status, want.SignPub, want.Handle, want.Role, want.Status)
	}
	if !bytes.Equal(got.KEMPub, want.KEMPub) {
		t.Errorf("user %s: KEMPub is %d bytes, not the %d stored", want.Handle, len(got.KEMPub), len(want.KEMPub))
	}
	if !bytes.Equal(got.KEMSig, want.KEMSig) {
		t.Errorf("user %s: KEMSig is %d bytes, not the %d stored", want.Handle, len(got.KEMSig), len(want.KEMSig))
	}
	checkTime(t, "CreatedAt", got.CreatedAt, want.CreatedAt)
	checkTime(t, "UpdatedAt", got.UpdatedAt, want.UpdatedAt)
}

func (f *fixture) getUser(signPub string) store.User {
	f.t.Helper()
	u, err := f.s.GetUser(f.ctx, signPub)
	if err != nil {
		f.t.Fatalf("GetUser: %v", err)
	}
	return u
}

func testAddGetUser(f *fixture) {
	for i, tc := range []struct {
		handle string
		role   store.Role
	}{
		{"alice", store.RoleAdmin},
		{"bob.builder-2", store.RoleMember},
	} {
		want := store.User{SignPub: signPub(tc.handle), Handle: tc.handle, Role: tc.role, Status: store.StatusActive,
			CreatedAt: at(i), UpdatedAt: at(i + 1)}
		if err := f.s.AddUser(f.ctx, want); err != nil {
			f.t.Fatalf("AddUser: %v", err)
		}
		checkUser(f.t, f.getUser(want.SignPub), want)
		got, err := f.s.GetUserByHandle(f.ctx, tc.handle)
		if err != nil {
			f.t.Fatalf("GetUserByHandle: %v", err)
		}
		checkUser(f.t, got, want)
	}
}

func testGetUserUnknown(f *fixture) {
	f.addUser("alice", store.RoleAdmin)
	if _, err := f.s.GetUser(f.ctx, signPub("nobody")); !errors.Is(err, store.ErrNotFound) {
		f.t.Errorf("GetUser(unknown): %v, want ErrNotFound", err)
	}
	if _, err := f.s.GetUserByHandle(f.ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
		f.t.Errorf("GetUserByHandle(unknown): %v, want ErrNotFound", err)
	}
}

func testListUsers(f *fixture) {
	us, err := f.s.ListUsers(f.ctx)
	if err != nil || len(us) != 0 {
		f.t.Fatalf("ListUsers on an empty store: %d users, %v", len(us), err)
	}
	for _, h := range []string{"zed", "alice", "mallory", "bob", "alice2"} {
		f.addUser(h, store.RoleMember)
	}
	if _, err := f.s.RevokeUser(f.ctx, signPub("mallory"), at(5)); err != nil {
		f.t.Fatalf("RevokeUser: %v", err)
	}
	us, err = f.s.ListUsers(f.ctx)
	if err != nil {
		f.t.Fatalf("ListUsers: %v", err)
	}
	var handles []string
	for _, u := range us {
		handles = append(handles, u.Handle)
		if u.SignPub != signPub(u.Handle) {
			f.t.Errorf("user %s has sign-pub %s", u.Handle, u.SignPub)
		}
		wantStatus := store.StatusActive
		if u.Handle == "mallory" {
			wantStatus = store.StatusRevoked
		}
		if u.Status != wantStatus {
			f.t.Errorf("user %s: status %s, want %s", u.Handle, u.Status, wantStatus)
		}
	}
	if want := []string{"alice", "alice2", "bob", "mallory", "zed"}; !reflect.DeepEqual(handles, want) {
		f.t.Errorf("ListUsers handles: %v, want %v (ordered by handle, revoked included)", handles, want)
	}
}

func testAddUserAlreadyRegistered(f *fixture) {
	alice := f.addUser("alice", store.RoleMember)
	f.addUser("bob", store.RoleMember)
	cases := []struct {
		name   string
		handle string
		role   store.Role
		status store.Status
		revoke bool // revoke alice before the re-add
		alt    error
	}{
		{name: "same record", handle: "alice", role: store.RoleMember, status: store.StatusActive},
		{name: "asks for admin", handle: "alice", role: store.RoleAdmin, status: store.StatusActive},
		{name: "new handle", handle: "alice-new", role: store.RoleAdmin, status: store.StatusActive},
		// Both rules apply; either error is acceptable, a change is not.
		{name: "handle of another user", handle: "bob", role: store.RoleAdmin, status: store.StatusActive, alt: store.ErrHandleTaken},
		{name: "after revocation", handle: "alice", role: store.RoleAdmin, status: store.StatusActive, revoke: true},
	}
	for _, tc := range cases {
		f.t.Run(tc.name, func(t *testing.T) {
			f := f.sub(t)
			if tc.revoke {
				if _, err := f.s.RevokeUser(f.ctx, alice.SignPub, at(3)); err != nil {
					t.Fatalf("RevokeUser: %v", err)
				}
			}
			before := f.getUser(alice.SignPub)
			admins, err := f.s.CountActiveAdmins(f.ctx)
			if err != nil {
				t.Fatalf("CountActiveAdmins: %v", err)
			}
			again := store.User{SignPub: alice.SignPub, Handle: tc.handle, Role: tc.role, Status: tc.status,
				KEMPub: filler(kemPubSize, "kem"), KEMSig: filler(sigSize, "kemsig"), CreatedAt: at(9), UpdatedAt: at(9)}
			err = f.s.AddUser(f.ctx, again)
			if !errors.Is(err, store.ErrAlreadyRegistered) && (tc.alt == nil || !errors.Is(err, tc.alt)) {
				t.Fatalf("re-add: %v, want ErrAlreadyRegistered", err)
			}
			if after := f.getUser(alice.SignPub); !reflect.DeepEqual(after, before) {
				t.Errorf("re-add changed the record:\n got %+v\nwant %+v", after, before)
			}
			if n, err := f.s.CountActiveAdmins(f.ctx); err != nil || n != admins {
				t.Errorf("CountActiveAdmins after re-add: %d, %v; want %d", n, err, admins)
			}
			if tc.handle == "alice-new" {
				if _, err := f.s.GetUserByHandle(f.ctx, tc.handle); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("the refused re-add's handle is in use: %v", err)
				}
			}
		})
	}
	if bob := f.getUser(signPub("bob")); bob.Handle != "bob" {
		f.t.Errorf("bob's record changed: %+v", bob)
	}
}

func testAddUserHandleTaken(f *fixture) {
	alice := f.addUser("alice", store.RoleMember)
	mallory := f.addUser("mallory", store.RoleMember)
	if _, err := f.s.RevokeUser(f.ctx, mallory.SignPub, at(1)); err != nil {
		f.t.Fatalf("RevokeUser: %v", err)
	}
	for _, handle := range []string{"alice", "mallory"} { // a revoked user's handle stays taken
		f.t.Run(handle, func(t *testing.T) {
			f := f.sub(t)
			u := store.User{SignPub: signPub("imposter " + handle), Handle: handle, Role: store.RoleAdmin, Status: store.StatusActive, CreatedAt: at(2), UpdatedAt: at(2)}
			wantErr(t, "AddUser", f.s.AddUser(f.ctx, u), store.ErrHandleTaken)
			if _, err := f.s.GetUser(f.ctx, u.SignPub); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("the refused user exists: %v", err)
			}
			got, err := f.s.GetUserByHandle(f.ctx, handle)
			if err != nil {
				t.Fatalf("GetUserByHandle: %v", err)
			}
			if got.SignPub != signPub(handle) {
				t.Errorf("handle %s now belongs to %s", handle, got.SignPub)
			}
		})
	}
	checkUser(f.t, f.getUser(alice.SignPub), alice)
	if n, err := f.s.CountActiveAdmins(f.ctx); err != nil || n != 0 {
		f.t.Errorf("CountActiveAdmins: %d, %v; want 0", n, err)
	}
}

func testRevokeUser(f *fixture) {
	alice := f.addUser("alice", store.RoleAdmin)
	bob := f.addUser("bob", store.RoleMember)
	got, err := f.s.RevokeUser(f.ctx, alice.SignPub, at(7))
	if err != nil {
		f.t.Fatalf("RevokeUser: %v", err)
	}
	want := alice
	want.Status, want.UpdatedAt = store.StatusRevoked, at(7)
	checkUser(f.t, got, want)
	checkUser(f.t, f.getUser(alice.SignPub), want)
	byHandle, err := f.s.GetUserByHandle(f.ctx, "alice")
	if err != nil {
		f.t.Fatalf("GetUserByHandle(revoked): %v", err)
	}
	checkUser(f.t, byHandle, want)

	again, err := f.s.RevokeUser(f.ctx, alice.SignPub, at(8))
	if err != nil {
		f.t.Fatalf("revoking twice: %v", err)
	}
	if again.Status != store.StatusRevoked || again.Role != store.RoleAdmin || again.Handle != "alice" {
		f.t.Errorf("second revocation returned %+v", again)
	}
	checkUser(f.t, f.getUser(bob.SignPub), bob)

	if _, err := f.s.RevokeUser(f.ctx, signPub("nobody"), at(9)); !errors.Is(err, store.ErrNotFound) {
		f.t.Errorf("RevokeUser(unknown): %v, want ErrNotFound", err)
	}
	if _, err := f.s.GetUser(f.ctx, signPub("nobody")); !errors.Is(err, store.ErrNotFound) {
		f.t.Errorf("revoking an unknown user created it: %v", err)
	}
}

func testSetKEMKey(f *fixture) {
	alice := f.addUser("alice", store.RoleAdmin)
	bob := f.addUser("bob", store.RoleMember)
	want := alice
	for i, label := range []string{"first", "second"} {
		want.KEMPub, want.KEMSig, want.UpdatedAt = filler(kemPubSize, "kem "+label), filler(sigSize, "sig "+label), at(10+i)
		if err := f.s.SetKEMKey(f.ctx, alice.SignPub, want.KEMPub, want.KEMSig, want.UpdatedAt); err != nil {
			f.t.Fatalf("SetKEMKey(%s): %v", label, err)
		}
		checkUser(f.t, f.getUser(alice.SignPub), want)
	}
	checkUser(f.t, f.getUser(bob.SignPub), bob)
	err := f.s.SetKEMKey(f.ctx, signPub("nobody"), filler(kemPubSize, "kem"), filler(sigSize, "sig"), at(12))
	wantErr(f.t, "SetKEMKey(unknown)", err, store.ErrNotFound)
}

func testCountActiveAdmins(f *fixture) {
	count := func(want int) {
		f.t.Helper()
		n, err := f.s.CountActiveAdmins(f.ctx)
		if err != nil {
			f.t.Fatalf("CountActiveAdmins: %v", err)
		}
		if n != want {
			f.t.Errorf("CountActiveAdmins = %d, want %d", n, want)
		}
	}
	count(0)
	f.addUser("root", store.RoleAdmin)
	f.addUser("ops", store.RoleAdmin)
	f.addUser("carol", store.RoleMember)
	count(2)
	revoke := func(handle string) {
		f.t.Helper()
		if _, err := f.s.RevokeUser(f.ctx, signPub(handle), at(3)); err != nil {
			f.t.Fatalf("RevokeUser: %v", err)
		}
	}
	revoke("ops")
	count(1)
	revoke("carol")
	count(1)
	revoke("root")
	count(0)
}
