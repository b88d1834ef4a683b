package api

import (
	"net/http"

	"github.com/unibus/unibus/wire"
)

// createListener makes a consumer that delivers the room's messages to
// the caller, who must be a member: members never create consumers
// themselves (docs/DESIGN.md, "Listeners").
func (s *Server) createListener(w http.ResponseWriter, r *http.Request, c *caller) error {
	room, _, isMember, err := s.roomFor(r, c)
	if err != nil {
		return err
	}
	if !isMember {
		return forbidden("only members may listen to a room")
	}
	var req wire.ListenRequest
	if err := decode(c.body, &req); err != nil {
		return err
	}
	l, err := s.o.DataPlane.CreateListener(r.Context(), room, c.user.SignPub, req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, l)
	return nil
}

// deleteListener deletes one of the caller's listeners in the room.
func (s *Server) deleteListener(w http.ResponseWriter, r *http.Request, c *caller) error {
	room, _, isMember, err := s.roomFor(r, c)
	if err != nil {
		return err
	}
	if !isMember {
		return ErrNoListener
	}
	if err := s.o.DataPlane.DeleteListener(r.Context(), room, c.user.SignPub, r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
