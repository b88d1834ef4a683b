package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/unibus/unibus/client"
)

// maxStdinMessage bounds a message read from standard input.
const maxStdinMessage = 1 << 20

// room dials and resolves a ROOM argument (id or name).
func (a *app) room(cmd *cobra.Command, arg string) (*client.Client, string, error) {
	c, err := a.client(cmd.Context())
	if err != nil {
		return nil, "", err
	}
	id, err := c.ResolveRoom(cmd.Context(), arg)
	if err != nil {
		return nil, "", err
	}
	return c, id, nil
}

func newSendCmd(a *app) *cobra.Command {
	var topic, file string
	cmd := &cobra.Command{
		Use:   "send ROOM MESSAGE|- | send ROOM --file FILE",
		Short: "Encrypt, sign and publish one message ('-' reads it from stdin), or put and announce a file",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if file != "" {
				if len(args) != 1 {
					return usageErr("send --file takes no MESSAGE")
				}
				c, room, err := a.room(cmd, args[0])
				if err != nil {
					return err
				}
				ann, err := a.sendFile(cmd, c, room, topic, file)
				if err != nil {
					return err
				}
				return a.print(map[string]any{"room": room, "id": ann.ID, "name": ann.Name, "size": ann.Size}, "sent file "+ann.Name+" as blob "+ann.ID)
			}
			if len(args) != 2 {
				return usageErr("send needs ROOM and MESSAGE (or --file FILE)")
			}
			data := []byte(args[1])
			if args[1] == "-" {
				b, err := io.ReadAll(io.LimitReader(a.stdin, maxStdinMessage+1))
				if err != nil {
					return err
				}
				if len(b) > maxStdinMessage {
					return usageErr("message on stdin is larger than %d bytes", maxStdinMessage)
				}
				data = b
			}
			c, room, err := a.room(cmd, args[0])
			if err != nil {
				return err
			}
			id, err := c.Send(cmd.Context(), room, topic, data)
			if err != nil {
				return err
			}
			return a.print(map[string]string{"room": room, "msg_id": id}, "sent "+id)
		},
	}
	cmd.Flags().StringVar(&topic, "topic", "", "topic (subject tokens below the room; default msg)")
	cmd.Flags().StringVar(&file, "file", "", "encrypt and upload this file, and announce it")
	return cmd
}

// messageJSON is one line of `listen --json`.
type messageJSON struct {
	Room   string    `json:"room"`
	Topic  string    `json:"topic"`
	Sender string    `json:"sender"`
	Handle string    `json:"handle"`
	Epoch  uint64    `json:"epoch"`
	Seq    uint64    `json:"seq"`
	MsgID  string    `json:"msg_id"`
	Time   time.Time `json:"time"`
	Data   string    `json:"data"`
}

func newListenCmd(a *app) *cobra.Command {
	var topic string
	var fromStart bool
	var count int
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "listen ROOM",
		Short: "Print the room's messages, decrypted and verified, one per line",
		Long: `Print the room's messages, one per line: "<handle>: <text>", or with
--json one JSON object per line. Messages that fail verification (bad
signature, sender not a member, no key for their epoch, duplicates) and
gaps in a sender's sequence are reported on stderr, never printed as
plaintext.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, room, err := a.room(cmd, args[0])
			if err != nil {
				return err
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			if wait > 0 {
				ctx, cancel = context.WithTimeout(ctx, wait)
				defer cancel()
			}
			n := 0
			enc := json.NewEncoder(a.stdout)
			opts := client.ListenOptions{Topic: topic, FromStart: fromStart, OnError: func(err error) {
				fmt.Fprintln(a.stderr, "unibus: not delivered:", err)
			}}
			err = c.Listen(ctx, room, opts, func(m client.Message) {
				if a.json {
					enc.Encode(messageJSON{Room: m.Room, Topic: m.Topic, Sender: m.Sender, Handle: m.Handle, Epoch: m.Epoch,
						Seq: m.Seq, MsgID: m.MsgID, Time: m.Time, Data: string(m.Data)})
				} else if ann, ok := client.ParseBlobAnnouncement(m.Data); ok {
					// Never print the blob key on a terminal.
					// The name is the sender's: quote it, never trust it as a path.
					fmt.Fprintf(a.stdout, "%s: [file %q, %s] blob %s\n", m.Handle, ann.Name, human(ann.Size), ann.ID)
				} else {
					fmt.Fprintf(a.stdout, "%s: %s\n", m.Handle, terminalText(m.Data))
				}
				n++
				if count > 0 && n >= count {
					cancel()
				}
			})
			if err != nil {
				return err
			}
			if count > 0 && n < count {
				return &exitError{exitFailed, fmt.Errorf("received %d of %d messages before --wait expired", n, count)}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&topic, "topic", "", "only this topic (may use * and >)")
	f.BoolVar(&fromStart, "from-start", false, "replay the room's stored history first")
	f.IntVar(&count, "count", 0, "exit after this many messages (0 = run until interrupted)")
	f.DurationVar(&wait, "wait", 0, "exit after this long (0 = no limit)")
	return cmd
}
