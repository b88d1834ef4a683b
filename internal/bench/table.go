package bench

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// WriteTable prints the report for people.
func (r *Report) WriteTable(w io.Writer) error {
	m := r.Machine
	fmt.Fprintf(w, "unibus-bench: %d × %s, %d GiB, %s/%s, %s, nats-server %s, nats.go %s\n",
		m.CPUs, orDash(m.CPUModel), m.MemoryGiB, m.OS, m.Arch, m.Go, m.NATSServer, m.NATSClient)
	fmt.Fprintf(w, "%d ms per measurement, %d workers; %.0f s in all; load average at the start %s\n", r.Options.DurationMs, r.Options.Workers, r.Elapsed, orDash(m.LoadAvg))

	if len(r.Ceilings) > 0 {
		fmt.Fprintf(w, "\nCPU ceilings on this machine (operations per second)\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "operation\tsize\t1 core\t%d cores\t\n", r.Machine.CPUs)
		for _, c := range r.Ceilings {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", c.Op, size(c.Size), num(c.OneCore), num(c.AllCores))
		}
		tw.Flush()
	}

	if len(r.Rooms) > 0 {
		fmt.Fprintf(w, "\nRoom messages, publish→consume: one sender and one receiver at once (two connections), a room of the shared stream;\n")
		fmt.Fprintf(w, "raw = plaintext through nats.go JetStream on the room's subject (membershipd's internal identity: the engine alone),\n")
		fmt.Fprintf(w, "e2e = the SDK (encrypt+sign, the relay, a listener, verify+decrypt; two identities); batches of %d\n", roomBatch)
		fmt.Fprintf(w, "pipelined publishes; latency = publish call to delivery, one in flight and under the throughput run\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "js-sync\tsize\tpath\tmsgs/s\te2e/raw\tp50 ms\tp99 ms\tloaded p50 ms\tloaded p99 ms\tclient µs/msg\tserver µs/msg\tclient allocs/msg\t\n")
		for _, x := range r.Rooms {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", x.JSSync, size(x.Size), x.Path, num(x.MsgsPerSec),
				ratio(x.Ratio), ms(x.P50Ms), ms(x.P99Ms), ms(x.LoadedP50Ms), ms(x.LoadedP99Ms),
				dec(x.ClientCPUUS), dec(x.ServerCPUUS), dec(x.ClientAllocs))
		}
		tw.Flush()
		fmt.Fprintf(w, "\nRoom messages, catch-up read: a new reader reads the room's stored messages from the start (the receiving side alone)\n")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "js-sync\tsize\tpath\tmsgs\tmsgs/s\te2e/raw\tclient µs/msg\tserver µs/msg\tclient allocs/msg\t\n")
		for _, x := range r.Rooms {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", x.JSSync, size(x.Size), x.Path, x.ReadMsgs, num(x.ReadMsgsPerSec),
				ratio(x.ReadRatio), dec(x.ReadClientCPUUS), dec(x.ReadServerCPUUS), dec(x.ReadAllocs))
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	for _, t := range r.Targets {
		verdict := "met"
		if !t.Met {
			verdict = "NOT met"
		}
		fmt.Fprintf(w, "target, %s (js-sync %s, %s): e2e %s msgs/s ≥ 0.8 × min(raw %s, crypto/ed25519 verify all cores %s) = %s: %s (%.2f of the bound)\n",
			t.Kind, t.JSSync, size(t.Size), num(t.E2E), num(t.Raw), num(t.Verify), num(t.Goal), verdict, t.Fraction)
		if t.FractionSDK > 0 {
			fmt.Fprintf(w, "  against the SDK's own verifier (batches, all cores %s): %.2f of min(raw, it)", num(t.VerifySDK), t.FractionSDK)
			if t.CPUBound > 0 {
				fmt.Fprintf(w, "; the measured client+server CPU per message fills the %d cores at %s msgs/s", r.Machine.CPUs, num(t.CPUBound))
			}
			fmt.Fprintln(w)
		}
	}

	if len(r.Control) > 0 {
		fmt.Fprintf(w, "\nControl plane: %d concurrent clients; signed = RFC 9421 signature + single-use nonce; ratio = over /healthz\n", r.Options.Workers)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "store\tendpoint\tsigned\treq/s\tratio\tp50 ms\tp99 ms\tverify ceiling/s\tserver µs/req\tclient µs/req\t\n")
		for _, x := range r.Control {
			signed := "no"
			if x.Signed {
				signed = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", x.Store, x.Endpoint, signed, num(x.ReqsPerSec), ratio(x.Ratio),
				ms(x.P50Ms), ms(x.P99Ms), num(x.VerifyCeiling), dec(x.ServerCPUUS), dec(x.ClientCPUUS))
		}
		tw.Flush()
		bare := map[string]float64{}
		for _, x := range r.Control {
			if x.Endpoint == EndpointBare {
				bare[x.Store] = x.ReqsPerSec
			}
		}
		for _, x := range r.Control {
			if x.NonceCeiling == 0 {
				continue
			}
			if x.Endpoint == EndpointBare {
				fmt.Fprintf(w, "bound, signed requests over HTTP (%s): a bare server (the signature check and the nonce write, nothing else), same clients: %s req/s = %.2f of the ceiling %s\n",
					x.Store, num(x.ReqsPerSec), x.ReqsPerSec/x.NonceCeiling, num(x.NonceCeiling))
				continue
			}
			got := x.ReqsPerSec / x.NonceCeiling
			verdict := "met"
			if got < 0.8 {
				verdict = "NOT met"
			}
			where := map[string]string{"sqlite": "SQLite", "kv": "KV"}[x.Store]
			fmt.Fprintf(w, "target, signed %s (%s): %s req/s ≥ 0.8 × ceiling of one verify + one %s nonce write (all cores) %s = %s: %s (%.2f of the ceiling)\n",
				x.Endpoint, x.Store, num(x.ReqsPerSec), where, num(x.NonceCeiling), num(0.8*x.NonceCeiling), verdict, got)
			if b := bare[x.Store]; b > 0 && x.Endpoint == EndpointRead {
				fmt.Fprintf(w, "  against the bare server over HTTP (%s req/s): %.2f\n", num(b), x.ReqsPerSec/b)
			}
		}
	}

	if len(r.Connect) > 0 {
		fmt.Fprintf(w, "\nData-plane logins (connect, authenticate, PING/PONG, close): %d concurrent; each server in its own process;\n", r.Options.Workers)
		fmt.Fprintf(w, "a member's permissions are the same whatever its rooms; ratio = over nats-server's own nkey auth\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "server\tstore\tlogins/s\tratio\tp50 ms\tp99 ms\tserver µs/login\tclient µs/login\t\n")
		for _, x := range r.Connect {
			name := x.Server
			if x.InProcess {
				name += " (in the bench process)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, orDash(x.Store), num(x.PerSec), ratio(x.Ratio), ms(x.P50Ms), ms(x.P99Ms), dec(x.ServerCPUUS), dec(x.ClientCPUUS))
		}
		tw.Flush()
	}

	if len(r.Memory) > 0 {
		fmt.Fprintf(w, "\nServer memory: membershipd's VmRSS; idle = as started (the defaults, a fresh data directory), before any load;\n")
		fmt.Fprintf(w, "peak = its high-water mark over the scenarios it carried\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "measure\tstore\tjs-sync\tMiB\t\n")
		for _, x := range r.Memory {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", x.What, x.Store, x.JSSync, strconv.FormatFloat(float64(x.KiB)/1024, 'f', 1, 64))
		}
		tw.Flush()
	}

	if len(r.Blobs) > 0 {
		fmt.Fprintf(w, "\nBlobs: %d MiB, MB/s of plaintext; ratio = unibus over plain HTTP in the same direction\n", r.Blobs[0].Bytes>>20)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "path\tMB/s\tratio\t\n")
		for _, x := range r.Blobs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t\n", x.Path, num(x.MBps), ratio(x.Ratio))
		}
		tw.Flush()
	}

	for _, s := range r.Skipped {
		fmt.Fprintf(w, "\nskipped %s: %s\n", s.What, s.Reason)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "\nERROR %s\n", e)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func size(n int) string {
	switch {
	case n == 0:
		return "-"
	case n%1024 == 0:
		return strconv.Itoa(n/1024) + " KiB"
	}
	return strconv.Itoa(n) + " B"
}

// num prints a rate with thousands separators (one decimal below 100).
func num(f float64) string {
	if f == 0 {
		return "-"
	}
	if f < 100 {
		return strconv.FormatFloat(f, 'f', 1, 64)
	}
	s := strconv.FormatInt(int64(f+0.5), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func ratio(f float64) string {
	if f == 0 {
		return "-"
	}
	return strconv.FormatFloat(f, 'f', 2, 64)
}

func ms(f float64) string {
	if f == 0 {
		return "-"
	}
	if f < 10 {
		return strconv.FormatFloat(f, 'f', 2, 64)
	}
	return strconv.FormatFloat(f, 'f', 1, 64)
}

func dec(f float64) string {
	if f == 0 {
		return "-"
	}
	if f < 10 {
		return strconv.FormatFloat(f, 'f', 1, 64)
	}
	return strconv.FormatFloat(f, 'f', 0, 64)
}
