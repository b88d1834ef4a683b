package main

import (
	"fmt"
	"io"
	"mime"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/unibus/unibus/client"
)

func newBlobCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "blob", Short: "Encrypted files: put (upload and announce) and get"}
	var topic, out string
	put := &cobra.Command{
		Use:   "put ROOM FILE",
		Short: "Encrypt FILE on this machine, upload it, and announce it in the room",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, room, err := a.room(cmd, args[0])
			if err != nil {
				return err
			}
			ann, err := a.sendFile(cmd, c, room, topic, args[1])
			if err != nil {
				return err
			}
			return a.print(map[string]any{"room": room, "id": ann.ID, "name": ann.Name, "size": ann.Size}, ann.ID)
		},
	}
	put.Flags().StringVar(&topic, "topic", "", "topic of the announcement")
	get := &cobra.Command{
		Use:   "get ROOM ID -o FILE",
		Short: "Download an announced blob and decrypt it into FILE",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usageErr("blob get needs -o FILE ('-' for stdout)")
			}
			c, room, err := a.room(cmd, args[0])
			if err != nil {
				return err
			}
			ann, err := c.FindBlob(cmd.Context(), room, args[1])
			if err != nil {
				return err
			}
			w, finish, err := openOutput(out)
			if err != nil {
				return err
			}
			bar := a.progress("get "+ann.Name, ann.Size)
			n, err := c.GetBlob(cmd.Context(), room, ann, w, bar.update)
			bar.done()
			if err := finish(err); err != nil {
				return err
			}
			return a.print(map[string]any{"room": room, "id": ann.ID, "file": out, "size": n}, fmt.Sprintf("wrote %s (%d bytes)", out, n))
		},
	}
	get.Flags().StringVarP(&out, "output", "o", "", "file to write ('-' for stdout); written to a temporary name and renamed when complete")
	cmd.AddCommand(put, get)
	return cmd
}

// sendFile uploads path and announces it.
func (a *app) sendFile(cmd *cobra.Command, c *client.Client, room, topic, path string) (client.BlobAnnouncement, error) {
	f, err := os.Open(path)
	if err != nil {
		return client.BlobAnnouncement{}, &exitError{exitUsage, err}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return client.BlobAnnouncement{}, err
	}
	meta := client.BlobMeta{Name: filepath.Base(path), ContentType: mime.TypeByExtension(filepath.Ext(path))}
	bar := a.progress("put "+meta.Name, fi.Size())
	ann, err := c.SendBlob(cmd.Context(), room, topic, f, meta, bar.update)
	bar.done()
	return ann, err
}

// openOutput opens the destination; finish renames the temporary file into
// place only when the download completed, and removes it otherwise.
func openOutput(path string) (io.Writer, func(error) error, error) {
	if path == "-" {
		return os.Stdout, func(err error) error { return err }, nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".part-*")
	if err != nil {
		return nil, nil, &exitError{exitUsage, err}
	}
	return tmp, func(err error) error {
		cerr := tmp.Close()
		if err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), path)
		}
		if err != nil {
			os.Remove(tmp.Name())
		}
		return err
	}, nil
}

// progressBar draws a one-line progress bar on a terminal's stderr; it is
// silent when stderr is not a terminal or with --json.
type progressBar struct {
	w     io.Writer
	label string
	total int64
	on    bool
}

func (a *app) progress(label string, total int64) *progressBar {
	on := false
	if f, ok := a.stderr.(*os.File); ok && !a.json {
		on = term.IsTerminal(int(f.Fd()))
	}
	return &progressBar{w: a.stderr, label: label, total: total, on: on}
}

func (p *progressBar) update(n int64) {
	if !p.on {
		return
	}
	pct := 100.0
	if p.total > 0 {
		pct = float64(n) * 100 / float64(p.total)
	}
	const width = 30
	filled := min(int(pct*width/100), width)
	bar := make([]byte, width)
	for i := range bar {
		bar[i] = '.'
		if i < filled {
			bar[i] = '#'
		}
	}
	fmt.Fprintf(p.w, "\r%s [%s] %5.1f%% %s/%s", p.label, bar, pct, human(n), human(p.total))
}

func (p *progressBar) done() {
	if p.on {
		fmt.Fprintln(p.w)
	}
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}
