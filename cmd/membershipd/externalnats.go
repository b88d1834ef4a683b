package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/unibus/unibus/internal/extnats"
)

// newExternalNATSCmd is `membershipd external-nats init|config`: the
// credentials of membershipd in front of an external NATS, and the
// nats-server configuration they need (deploy/external-nats).
func newExternalNATSCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "external-nats",
		Short: "Credentials and nats-server configuration for membershipd in front of an external NATS (--nats-url)",
	}
	var creds string
	initCmd := &cobra.Command{
		Use:   "init --nats-creds FILE",
		Short: "Create the credentials file (0600, never overwritten) and print the nats-server configuration it needs",
		Long: `Create a new credentials file: one account seed from which membershipd
derives the auth callout's issuer, its callout and system users, the xkey
and its internal identity. Copy it (0600) to every membershipd in front of
the same NATS. Then print the unibus part of the nats-server configuration,
as 'config' does.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, err := extnats.WriteNewCreds(creds)
			if err != nil {
				return &exitError{1, err}
			}
			fmt.Fprint(stdout, extnats.ServerConfig(k.Public()))
			return nil
		},
	}
	configCmd := &cobra.Command{
		Use:   "config --nats-creds FILE",
		Short: "Print the unibus part of the nats-server configuration for a credentials file (public keys only)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, err := extnats.LoadKeys(creds)
			if err != nil {
				return &exitError{1, err}
			}
			fmt.Fprint(stdout, extnats.ServerConfig(k.Public()))
			return nil
		},
	}
	for _, c := range []*cobra.Command{initCmd, configCmd} {
		c.Flags().StringVar(&creds, "nats-creds", "", "the credentials file")
		c.MarkFlagRequired("nats-creds")
		cmd.AddCommand(c)
	}
	return cmd
}
