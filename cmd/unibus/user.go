package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/unibus/unibus/client"
)

func newUserCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "Users: add, list and revoke (admin), look up (any user)"}
	var handle, signPub, role string
	add := &cobra.Command{
		Use:   "add --handle H --sign-pub HEX [--role member|admin]",
		Short: "Register a user (admin)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			u, err := c.AddUser(cmd.Context(), handle, signPub, client.Role(role))
			if err != nil {
				return err
			}
			return a.print(userJSON(u), fmt.Sprintf("added user %q (%s) role=%s", u.Handle, u.SignPub, u.Role))
		},
	}
	add.Flags().StringVar(&handle, "handle", "", "unique handle")
	add.Flags().StringVar(&signPub, "sign-pub", "", "the user's sign-pub (from unibus keygen)")
	add.Flags().StringVar(&role, "role", "member", "member or admin")
	_ = add.MarkFlagRequired("handle")
	_ = add.MarkFlagRequired("sign-pub")
	cmd.AddCommand(add, &cobra.Command{
		Use:   "list",
		Short: "List users (admin)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			us, err := c.ListUsers(cmd.Context())
			if err != nil {
				return err
			}
			if a.json {
				return a.print(usersJSON(us), "")
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "HANDLE\tROLE\tSTATUS\tKEM\tSIGN-PUB")
			for _, u := range us {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\n", u.Handle, u.Role, u.Status, len(u.KEMPub) > 0, u.SignPub)
			}
			return tw.Flush()
		},
	}, &cobra.Command{
		Use:   "revoke USER",
		Short: "Revoke a user (admin): denied on both planes, live connections closed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			u, err := c.RevokeUser(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(userJSON(u), fmt.Sprintf("revoked user %q (%s)", u.Handle, u.SignPub))
		},
	}, &cobra.Command{
		Use:   "show USER",
		Short: "Show a user's public record",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			u, err := c.User(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(userJSON(u), fmt.Sprintf("%s %s role=%s status=%s kem=%v", u.Handle, u.SignPub, u.Role, u.Status, len(u.KEMPub) > 0))
		},
	})
	return cmd
}
