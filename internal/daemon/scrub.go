package daemon

import (
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/unibus/unibus/internal/natsnode"
	"github.com/unibus/unibus/internal/scrub"
)

// DefaultScrubInterval is how often a cluster node compares every
// replica of every stream (Config.ScrubInterval).
const DefaultScrubInterval = 10 * time.Minute

// scrubNowSpacing is the least time between two scrubs run on request
// (scrub.NowSubject).
const scrubNowSpacing = 10 * time.Second

// scrubFirst bounds the wait for the first scrub after start: a node
// whose files were damaged while it was down is the case the scrub is
// for, and it is found soonest right after a restart.
const scrubFirst = time.Minute

// scrubReplicas runs in cluster mode until Close. Every node answers the
// scrub's state requests (membershipd check and the other nodes' scrubs
// need every node's view); every ScrubInterval every node checks every
// stream, logs a divergent replica at error level and reports the count
// in unibus_scrub_divergent_replicas; only the meta leader repairs (one
// actor in the cluster, never two rebuilding the same stream), and only
// when the cluster has a quorum and a majority of the stream's replicas
// agree (scrub.Repair re-checks both before it changes anything).
func (d *Daemon) scrubReplicas() {
	log := d.log.With("component", "scrub")
	ver := scrub.NewVerifier(d.node.Server().StoreDir(), 0)
	resp, err := scrub.Serve(d.cnc, d.node.Server(), d.node.Quorum, ver, log)
	if err != nil {
		log.Error("scrub: cannot answer state requests: membershipd check will not see this node", "err", err)
		return
	}
	defer resp.Close()
	damaged := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "unibus_scrub_damaged_records",
		Help: "Records of this node's replicas whose checksum fails in their block files, as the last verification found (0: none).",
	}, func() float64 { return float64(resp.Damaged()) })
	if err := d.metrics.Registry.Register(damaged); err != nil {
		log.Warn("scrub: metric not registered", "err", err)
	}
	// A node that found damage in its replicas asks for a scrub now.
	now := make(chan string, 1)
	nowSub, err := d.cnc.Subscribe(scrub.NowSubject, func(m *nats.Msg) {
		select {
		case now <- string(m.Data):
		default:
		}
	})
	if err != nil {
		log.Warn("scrub: cannot hear requests for a scrub now; the next runs at its interval", "err", err)
	} else {
		defer nowSub.Unsubscribe()
	}
	// Verify every block at start: files damaged while the node was down
	// are found (and a damaged replica it leads steps down) before the
	// first scrub, and later answers read only what changed.
	started := time.Now()
	if v := resp.View(d.ctx, d.node.Quorum()); d.ctx.Err() == nil {
		for _, s := range v.Streams {
			if s.Unverified != "" {
				log.Warn("scrub: a replica's block files cannot be verified; only the comparison of counts covers it", "account", s.Account, "stream", s.Stream, "why", s.Unverified)
			}
		}
		log.Info("scrub: this node's replicas verified", "streams", len(v.Streams), "damaged_records", resp.Damaged(), "took", time.Since(started).Round(time.Millisecond))
	}
	interval := d.cfg.ScrubInterval
	if interval == 0 {
		interval = DefaultScrubInterval
	}
	if interval < 0 {
		<-d.ctx.Done()
		return
	}
	divergent := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "unibus_scrub_divergent_replicas",
		Help: "Replicas found divergent from their stream's majority by the last scrub (0: every replica agrees).",
	})
	repairs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "unibus_scrub_repairs_total", Help: "Repairs of divergent streams this node ran, by result (ok, failed).",
	}, []string{"result"})
	if err := d.metrics.Registry.Register(divergent); err != nil {
		log.Warn("scrub: metric not registered", "err", err)
	}
	if err := d.metrics.Registry.Register(repairs); err != nil {
		log.Warn("scrub: metric not registered", "err", err)
	}
	conns := scrub.Conns{Control: d.cnc, Accounts: map[string]*nats.Conn{natsnode.ControlAccount: d.cnc, natsnode.BusAccount: d.nc}}
	timer := time.NewTimer(min(interval, scrubFirst))
	defer timer.Stop()
	var last time.Time
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-timer.C:
		case who := <-now:
			if wait := scrubNowSpacing - time.Since(last); wait > 0 {
				// Not more often than that: the request is served then.
				timer.Reset(wait)
				continue
			}
			log.Info("scrub: asked to run now: a node found damage in its replicas", "node", who)
		}
		last = time.Now()
		timer.Reset(interval)
		if !d.node.Quorum() {
			log.Warn("scrub skipped: no quorum visible")
			continue
		}
		report, err := scrub.Check(d.ctx, d.cnc, scrub.Options{})
		if err != nil {
			if d.ctx.Err() == nil {
				log.Warn("scrub: check failed", "err", err)
			}
			continue
		}
		divergent.Set(float64(report.DivergentReplicas()))
		bad := report.Divergent()
		for _, sr := range bad {
			for _, r := range sr.Diverged {
				log.Error("scrub: a replica diverges from its stream's majority",
					"account", sr.Account, "stream", sr.Stream, "replica", r.Server, "leader", sr.Leader,
					"holds", r.State.String(), "majority", sr.Agreed.String(), "agreeing", sr.Majority)
			}
		}
		if leader, _ := d.node.MetaLeader(); len(bad) == 0 || leader != d.nodeName() || !report.Quorum {
			continue
		}
		for _, sr := range bad {
			err := scrub.Repair(d.ctx, conns, sr, scrub.RepairOptions{Step: func(stream, step string) {
				log.Warn("scrub repair: "+step, "stream", stream)
			}})
			if err != nil {
				repairs.WithLabelValues("failed").Inc()
				log.Error("scrub: repair failed; the replica stays divergent (membershipd check --repair to retry)", "stream", sr.Stream, "err", err)
				continue
			}
			repairs.WithLabelValues("ok").Inc()
		}
		if after, err := scrub.Check(d.ctx, d.cnc, scrub.Options{}); err == nil {
			divergent.Set(float64(after.DivergentReplicas()))
		}
	}
}
