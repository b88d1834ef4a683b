package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/unibus/unibus/client"
)

func newRoomCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "room", Short: "Create rooms and manage their members and keys"}
	var role string
	add := &cobra.Command{
		Use:   "add ROOM USER",
		Short: "Add a user (handle or sign-pub) to a room, sealing the room key to them",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if r := client.RoomRole(role); r != client.RoomMember && r != client.RoomOwner {
				return usageErr("--role must be member or owner")
			}
			c, room, err := a.room(cmd, args[0])
			if err != nil {
				return err
			}
			if err := c.AddMember(cmd.Context(), room, args[1], client.RoomRole(role)); err != nil {
				return err
			}
			return a.print(map[string]string{"room": room, "member": args[1], "role": role}, fmt.Sprintf("added %s to %s as %s", args[1], args[0], role))
		},
	}
	add.Flags().StringVar(&role, "role", "member", "member or owner")
	cmd.AddCommand(&cobra.Command{
		Use:   "create NAME",
		Short: "Create a room you own",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			r, err := c.CreateRoom(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(roomJSON(r), fmt.Sprintf("created room %s (%s)", r.Name, r.ID))
		},
	}, &cobra.Command{
		Use:   "list",
		Short: "List your rooms",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			rs, err := c.ListRooms(cmd.Context())
			if err != nil {
				return err
			}
			if a.json {
				return a.print(roomsJSON(rs), "")
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tID\tEPOCH\tROTATION-PENDING")
			for _, r := range rs {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%v\n", r.Name, r.ID, r.Epoch, r.RotationPending)
			}
			return tw.Flush()
		},
	}, &cobra.Command{
		Use:   "info ROOM",
		Short: "Show a room, its members and its epochs",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, room, err := a.room(cmd, args[0])
			if err != nil {
				return err
			}
			ri, err := c.RoomInfo(cmd.Context(), room)
			if err != nil {
				return err
			}
			if a.json {
				return a.print(roomInfoJSON(ri), "")
			}
			var b strings.Builder
			fmt.Fprintf(&b, "room %s (%s) epoch %d", ri.Room.Name, ri.Room.ID, ri.Room.Epoch)
			if ri.Room.RotationPending {
				b.WriteString(" ROTATION PENDING")
			}
			b.WriteString("\n")
			tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MEMBER\tROLE\tSTATUS\tSIGN-PUB")
			for _, m := range ri.Members {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.Handle, m.Role, m.Status, m.SignPub)
			}
			tw.Flush()
			return a.print(nil, strings.TrimRight(b.String(), "\n"))
		},
	}, add, &cobra.Command{
		Use:   "remove ROOM USER",
		Short: "Remove a user from a room and rotate its key in the same request",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, room, err := a.room(cmd, args[0])
			if err != nil {
				return err
			}
			if err := c.RemoveMember(cmd.Context(), room, args[1]); err != nil {
				return err
			}
			return a.print(map[string]string{"room": room, "removed": args[1]}, fmt.Sprintf("removed %s from %s", args[1], args[0]))
		},
	}, &cobra.Command{
		Use:   "rotate ROOM",
		Short: "Move a room to a fresh key sealed to every current member",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, room, err := a.room(cmd, args[0])
			if err != nil {
				return err
			}
			if err := c.Rotate(cmd.Context(), room); err != nil {
				return err
			}
			ri, err := c.RoomInfo(cmd.Context(), room)
			if err != nil {
				return err
			}
			return a.print(roomJSON(ri.Room), fmt.Sprintf("rotated %s to epoch %d", args[0], ri.Room.Epoch))
		},
	})
	return cmd
}
