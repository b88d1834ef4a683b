package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/unibus/unibus/client"
)

// whoisJSON is the --json output of unibus whois.
type whoisJSON struct {
	Handle        string `json:"handle"`
	SignPub       string `json:"sign_pub"`
	Role          string `json:"role"`
	Status        string `json:"status"`
	Fingerprint   string `json:"fingerprint,omitempty"`
	Pin           string `json:"pin"`
	Change        string `json:"change,omitempty"`
	KnownKeysFile string `json:"known_keys_file,omitempty"`
}

func newWhoisCmd(a *app) *cobra.Command {
	var accept bool
	cmd := &cobra.Command{
		Use:   "whois USER [--accept]",
		Short: "Show a user's keys and fingerprint, and whether they match the pinned keys",
		Long: `Show a user's (handle or sign-pub) public keys, the fingerprint to compare
with them out of band (in person, on a call), and how the keys compare with
the ones this identity pinned the first time it saw them.

Keys seen for the first time are pinned. When the server gives keys that
differ from the pinned ones, unibus refuses to seal room keys to them, and
whois exits with status 1. If the user really has new keys (compare the
fingerprint with them first), accept them with --accept.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			var ki client.KeyInfo
			if accept {
				ki, err = c.AcceptKeys(cmd.Context(), args[0])
			} else {
				ki, err = c.Whois(cmd.Context(), args[0])
			}
			if err != nil {
				return err
			}
			if err := printWhois(a, ki); err != nil {
				return err
			}
			if ki.Change != nil {
				return &exitError{exitFailed, ki.Change}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&accept, "accept", false, "pin the keys the server gives now, replacing the pinned ones (after comparing the fingerprint out of band)")
	return cmd
}

func printWhois(a *app, ki client.KeyInfo) error {
	u := ki.User
	j := whoisJSON{Handle: u.Handle, SignPub: u.SignPub, Role: string(u.Role), Status: string(u.Status),
		Fingerprint: ki.Fingerprint, Pin: string(ki.Pin), KnownKeysFile: ki.KnownKeysFile}
	if ki.Change != nil {
		j.Change = ki.Change.Key
	}
	fp := ki.Fingerprint
	if fp == "" {
		fp = "none: no KEM key published yet (the user runs: unibus register)"
	}
	var pin string
	switch ki.Pin {
	case client.PinNew:
		pin = "first seen: pinned now"
	case client.PinMatch:
		pin = "match the pinned keys"
		if ki.Self {
			pin = "your own: they match this identity"
		}
	case client.PinAccepted:
		pin = "accepted: pinned now, replacing the previous keys"
	case client.PinChanged:
		pin = "CHANGED: the " + ki.Change.Key + " differs from the pinned one; room keys will not be sealed to it"
		if ki.Self {
			pin = "CHANGED: the server gives your sign-pub a KEM key that is not this identity's"
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "handle:      %s\nsign-pub:    %s\nrole:        %s\nstatus:      %s\nfingerprint: %s\nkeys:        %s",
		u.Handle, u.SignPub, u.Role, u.Status, fp, pin)
	if ki.KnownKeysFile != "" {
		fmt.Fprintf(&b, "\nknown keys:  %s", ki.KnownKeysFile)
	}
	return a.print(j, b.String())
}
