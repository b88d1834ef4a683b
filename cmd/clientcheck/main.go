// Command clientcheck is an end-to-end proof against a live deployment
// (docs/DESIGN.md): an authenticated client (its identity's nkey, TLS pinned to
// --ca) creates an E2E room, publishes N messages at a steady rate while it
// receives them through the same room, and reports what was sent, received,
// lost and duplicated and the longest gap between two received messages.
// It keeps going while an operator stops a node: both planes fail over
// across the seed URLs; a message goes through membershipd's relay, and
// one whose acknowledgement is lost is sent again with the same message id
// (the stream stores it once); the SDK's listener is made again after the
// last message it delivered.
//
// Exit status: 0 when every message arrived exactly once and nothing else
// arrived, 1 on any loss, duplicate or unexpected message, 2 on usage
// errors, 3 when the deployment cannot be reached or the receiver stopped.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
)

// Report is clientcheck's result (--json prints it).
type Report struct {
	Room       string `json:"room"`
	Sent       int    `json:"sent"`
	Received   int    `json:"received"`
	Lost       int    `json:"lost"`
	Duplicated int    `json:"duplicated"`
	// Unexpected counts messages in the room that clientcheck did not send.
	Unexpected int           `json:"unexpected"`
	LongestGap time.Duration `json:"longest_gap_ns"`
	GapAfter   int           `json:"gap_after_seq"` // the message before the longest gap
	Elapsed    time.Duration `json:"elapsed_ns"`
	SendErrors int           `json:"send_errors"` // retried sends (the message was still sent once)
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("clientcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	servers := fs.String("server", envOr("UNIBUS_SERVER", "http://127.0.0.1:8470"), "control-plane URLs, comma-separated seeds")
	natsURLs := fs.String("nats", envOr("UNIBUS_NATS", "nats://127.0.0.1:4250"), "data-plane URLs, comma-separated seeds")
	idFile := fs.String("identity", envOr("UNIBUS_IDENTITY", "local_files/admin.id"), "identity file (0600)")
	ca := fs.String("ca", os.Getenv("UNIBUS_CA"), "CA certificate of the deployment's TLS certificates")
	n := fs.Int("n", 1000, "messages to send")
	rate := fs.Float64("rate", 50, "messages per second")
	drain := fs.Duration("drain", 30*time.Second, "how long to wait for the last messages after sending")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *n < 1 || *rate <= 0 {
		fmt.Fprintln(stderr, "clientcheck: -n must be ≥ 1 and -rate > 0")
		return 2
	}
	id, err := identity.Load(*idFile)
	if err != nil {
		fmt.Fprintln(stderr, "clientcheck:", err)
		return 2
	}
	cfg := client.Config{Identity: id, Servers: split(*servers), NATS: split(*natsURLs)}
	if *ca != "" {
		if cfg.RootCAs, err = client.LoadCA(*ca); err != nil {
			fmt.Fprintln(stderr, "clientcheck:", err)
			return 2
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := check(ctx, cfg, *n, *rate, *drain, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "clientcheck:", err)
		return 3
	}
	if *asJSON {
		json.NewEncoder(stdout).Encode(rep)
	} else {
		fmt.Fprintf(stdout, "room %s: sent %d received %d lost %d duplicated %d unexpected %d longest_gap %v (after #%d) elapsed %v send_retries %d\n",
			rep.Room, rep.Sent, rep.Received, rep.Lost, rep.Duplicated, rep.Unexpected, rep.LongestGap.Round(time.Millisecond), rep.GapAfter,
			rep.Elapsed.Round(time.Millisecond), rep.SendErrors)
	}
	if rep.Lost > 0 || rep.Duplicated > 0 || rep.Unexpected > 0 {
		return 1
	}
	return 0
}

func check(ctx context.Context, cfg client.Config, n int, rate float64, drain time.Duration, log io.Writer) (Report, error) {
	dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	c, err := client.Dial(dctx, cfg)
	cancel()
	if err != nil {
		return Report{}, err
	}
	defer c.Close()
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	room, err := c.CreateRoom(rctx, "clientcheck-"+strconv.FormatInt(time.Now().Unix(), 10))
	cancel()
	if err != nil {
		return Report{}, err
	}
	rep := Report{Room: room.ID}

	var mu sync.Mutex
	got := newTally(n)
	all := make(chan struct{})
	lctx, lcancel := context.WithCancel(ctx)
	defer lcancel()
	listening := make(chan error, 1)
	go func() {
		listening <- c.Listen(lctx, room.ID, client.ListenOptions{Topic: "check", FromStart: true,
			OnError: func(err error) { fmt.Fprintln(log, "clientcheck: reported:", err) }}, func(m client.Message) {
			mu.Lock()
			defer mu.Unlock()
			if got.add(m.Data, time.Now()) {
				close(all)
			}
		})
	}()
	// stopped is the receiver's end before its time: an error.
	stopped := func(err error) error {
		if err == nil || errors.Is(err, context.Canceled) {
			err = errors.New("the receiver stopped")
		}
		return fmt.Errorf("listen: %w", err)
	}

	start := time.Now()
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for i := 1; i <= n; i++ {
		select {
		case <-ctx.Done():
			return rep, ctx.Err()
		case err := <-listening:
			return rep, stopped(err)
		case <-tick.C:
		}
		// Send retries internally with the same message id; an error here
		// means it gave up: try again (a new id would risk a duplicate only
		// if the first attempt was stored, which the receiver counts).
		for {
			sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
			_, err := c.Send(sctx, room.ID, "check", []byte(strconv.Itoa(i)))
			scancel()
			if err == nil {
				break
			}
			rep.SendErrors++
			fmt.Fprintln(log, "clientcheck: send failed, retrying:", err)
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			time.Sleep(250 * time.Millisecond)
		}
		rep.Sent++
	}
	select {
	case <-all:
	case <-time.After(drain):
	case <-ctx.Done():
		return rep, ctx.Err()
	case err := <-listening:
		return rep, stopped(err)
	}
	lcancel()
	mu.Lock()
	defer mu.Unlock()
	rep.Elapsed = time.Since(start)
	got.fill(&rep)
	return rep, nil
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
