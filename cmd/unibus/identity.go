package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/unibus/unibus/identity"
)

func newKeygenCmd(a *app) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen -o FILE",
		Short: "Create a new identity file (0600) and print its sign-pub",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usageErr("keygen needs -o FILE")
			}
			id, err := identity.Generate()
			if err != nil {
				return err
			}
			if err := id.Save(out); err != nil {
				return &exitError{exitFailed, err}
			}
			return a.print(map[string]string{"file": out, "sign_pub": id.SignPub().String(), "nkey": id.NKey()}, id.SignPub().String())
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "identity file to create (never overwritten)")
	return cmd
}

func newWhoamiCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show this identity and what the server knows of it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			me, err := c.Me(cmd.Context())
			if err != nil {
				return err
			}
			return a.print(userJSON(me), fmt.Sprintf("handle:   %s\nsign-pub: %s\nrole:     %s\nstatus:   %s\nkem key:  %v",
				me.Handle, me.SignPub, me.Role, me.Status, len(me.KEMPub) > 0))
		},
	}
}

func newRegisterCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "register",
		Short: "Publish this identity's KEM key (signed), so owners can add you to rooms",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Dial publishes the key when the server lacks it; publish
			// again anyway so the command is explicit and idempotent.
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			me, err := c.Register(cmd.Context())
			if err != nil {
				return err
			}
			return a.print(userJSON(me), fmt.Sprintf("registered KEM key for %s (%s)", me.Handle, me.SignPub))
		},
	}
}
