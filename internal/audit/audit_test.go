package audit

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/chain.jsonl")

// vectorRecords are fixed inputs; testdata/chain.jsonl holds the entries
// they chain to, byte for byte, so another implementation can check its
// encoding and hashes against ours.
func vectorRecords() []Record {
	t0 := time.Date(2026, 11, 23, 9, 30, 0, 123456000, time.UTC)
	admin := strings.Repeat("a1", 32)
	alice := strings.Repeat("b2", 32)
	room := strings.Repeat("c3", 16)
	return []Record{
		{Time: t0, Actor: strings.Repeat("0f", 32), Via: ViaBootstrap, Action: ActionBootstrapAdmin, Subject: admin, Detail: "handle=admin role=admin file=local_files/admin.id"},
		{Time: t0.Add(time.Second), Actor: admin, Via: ViaAPI, Action: ActionUserAdd, Subject: alice, Detail: "handle=alice role=member", Request: strings.Repeat("d4", 32)},
		{Time: t0.Add(2 * time.Second), Actor: admin, Via: ViaAPI, Action: ActionRoomCreate, Room: room, Subject: admin, Detail: "name=ops <&> \"quoted\" é", Request: strings.Repeat("e5", 32)},
		{Time: t0.Add(3 * time.Second), Actor: admin, Via: ViaAPI, Action: ActionMemberAdd, Room: room, Subject: alice, Detail: "role=member handle=alice", Request: strings.Repeat("f6", 32)},
		{Time: t0.Add(4 * time.Second), Actor: admin, Via: ViaAPI, Action: ActionFailed, Room: room, Subject: alice, Detail: "already a member", Request: strings.Repeat("f6", 32), Refers: 4},
		{Time: t0.Add(5 * time.Second), Actor: ActorLocal, Via: ViaCLI, Action: ActionUserRevoke, Subject: alice},
	}
}

func chain(t *testing.T, rs []Record) []Entry {
	t.Helper()
	var out []Entry
	var prev *Entry
	for _, r := range rs {
		e, err := Next(prev, r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
		prev = &out[len(out)-1]
	}
	return out
}

func TestVectors(t *testing.T) {
	es := chain(t, vectorRecords())
	var buf bytes.Buffer
	for _, e := range es {
		b, err := Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	path := filepath.Join("testdata", "chain.jsonl")
	if *update {
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("encoding or hashes changed; got\n%s\nwant\n%s", buf.Bytes(), want)
	}
}

// TestStoredVectorsVerify reads the stored bytes (not our regenerated
// ones) and checks the chain, so the file is a self-contained vector.
func TestStoredVectorsVerify(t *testing.T) {
	es := readVectors(t)
	h, err := Verify(Head{}, es)
	if err != nil {
		t.Fatal(err)
	}
	if h.Seq != uint64(len(es)) || h.Hash != es[len(es)-1].Hash {
		t.Fatalf("head %+v", h)
	}
	if es[0].Prev != Genesis {
		t.Fatalf("first prev %s", es[0].Prev)
	}
}

func readVectors(t *testing.T) []Entry {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "chain.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var es []Entry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		e, err := Unmarshal(sc.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	if len(es) == 0 {
		t.Fatal("no vectors")
	}
	return es
}

func TestTamperingIsDetected(t *testing.T) {
	cases := []struct {
		name   string
		edit   func([]Entry) []Entry
		atSeq  string
		reason string
	}{
		{"edited detail", func(es []Entry) []Entry { es[2].Detail = "name=innocent"; return es }, "seq 3", "edited"},
		{"edited actor", func(es []Entry) []Entry { es[1].Actor = strings.Repeat("99", 32); return es }, "seq 2", "edited"},
		{"edited time", func(es []Entry) []Entry { es[3].Time = es[3].Time.Add(time.Hour); return es }, "seq 4", "edited"},
		{"removed entry", func(es []Entry) []Entry { return append(es[:2], es[3:]...) }, "seq 4", "missing"},
		{"swapped entries", func(es []Entry) []Entry { es[2], es[3] = es[3], es[2]; return es }, "seq 4", "missing or out of order"},
		{"rehashed edit", func(es []Entry) []Entry {
			// An attacker who edits an entry and fixes its own hash still
			// breaks the next entry's prev.
			es[1].Detail = "handle=alice role=admin"
			h, _ := es[1].digest()
			es[1].Hash = h
			return es
		}, "seq 3", "prev"},
		{"renumbered after removal", func(es []Entry) []Entry {
			es = append(es[:1], es[2:]...)
			for i := range es {
				es[i].Seq = uint64(i + 1)
			}
			return es
		}, "seq 2", "prev"},
		{"first entry not genesis", func(es []Entry) []Entry { return es[1:] }, "seq 2", "expected seq 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			es := tc.edit(readVectors(t))
			_, err := Verify(Head{}, es)
			if !errors.Is(err, ErrBroken) {
				t.Fatalf("tampering not detected: %v", err)
			}
			if !strings.Contains(err.Error(), tc.atSeq) || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("error %q does not name %q / %q", err, tc.atSeq, tc.reason)
			}
		})
	}
}

func TestVerifyContinuesFromHead(t *testing.T) {
	es := readVectors(t)
	h, err := Verify(Head{}, es[:3])
	if err != nil {
		t.Fatal(err)
	}
	h2, err := Verify(h, es[3:])
	if err != nil {
		t.Fatal(err)
	}
	if h2.Seq != uint64(len(es)) {
		t.Fatalf("head %+v", h2)
	}
	if _, err := Verify(Head{Seq: 3, Hash: Genesis}, es[3:]); !errors.Is(err, ErrBroken) {
		t.Fatalf("a wrong anchor was accepted: %v", err)
	}
}

func TestNextRejectsIncompleteRecords(t *testing.T) {
	ok := vectorRecords()[1]
	for name, edit := range map[string]func(*Record){
		"no time":   func(r *Record) { r.Time = time.Time{} },
		"no actor":  func(r *Record) { r.Actor = "" },
		"no via":    func(r *Record) { r.Via = "" },
		"no action": func(r *Record) { r.Action = "" },
	} {
		r := ok
		edit(&r)
		if _, err := Next(nil, r); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	big := ok
	big.Detail = strings.Repeat("x", MaxEntryBytes)
	e, err := Next(nil, big)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Marshal(e); !errors.Is(err, ErrInvalid) {
		t.Fatalf("oversized entry encoded: %v", err)
	}
}

func TestNextStoresUTC(t *testing.T) {
	r := vectorRecords()[1]
	r.Time = r.Time.In(time.FixedZone("UTC+05:30", 5*3600+30*60))
	e, err := Next(nil, r)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Marshal(e)
	if !bytes.Contains(b, []byte(`"time":"2026-11-23T09:30:01.123456Z"`)) {
		t.Fatalf("time not stored in UTC: %s", b)
	}
}

func TestUnmarshalIsStrict(t *testing.T) {
	good, err := os.ReadFile(filepath.Join("testdata", "chain.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	line := bytes.SplitN(good, []byte("\n"), 2)[0]
	for name, b := range map[string][]byte{
		"unknown member": bytes.Replace(line, []byte(`{"seq"`), []byte(`{"extra":1,"seq"`), 1),
		"trailing data":  append(append([]byte{}, line...), []byte(` {}`)...),
		"not json":       []byte("seq=1"),
		"oversized":      bytes.Repeat([]byte(" "), MaxEntryBytes+1),
	} {
		if _, err := Unmarshal(b); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := Unmarshal(line); err != nil {
		t.Fatal(err)
	}
}

func FuzzUnmarshal(f *testing.F) {
	good, err := os.ReadFile(filepath.Join("testdata", "chain.jsonl"))
	if err != nil {
		f.Fatal(err)
	}
	for _, l := range bytes.Split(good, []byte("\n")) {
		f.Add(l)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Unmarshal(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		// Whatever parses re-encodes to something that parses to the same
		// entry, and Verify never panics on it.
		b2, err := Marshal(e)
		if err != nil {
			return
		}
		e2, err := Unmarshal(b2)
		if err != nil {
			t.Fatalf("re-encoded entry does not parse: %v", err)
		}
		if !e2.Time.Equal(e.Time) {
			t.Fatal("time changed")
		}
		e2.Time = e.Time
		if e2 != e {
			t.Fatalf("round trip changed the entry: %+v != %+v", e2, e)
		}
		_, _ = Verify(Head{}, []Entry{e})
	})
}
