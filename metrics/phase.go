package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Phases are the metrics of the changes the agent makes with participants (two-phase adds,
// removals on request) and of the control socket. It implements notify.SyncObserver; its methods
// are safe for concurrent use and never block.
type Phases struct {
	m *Metrics
	// Vetoes counts vetoes by phase (add_start, query_remove), interface class, callback and
	// reason (error: the callback said no; timeout: it missed the deadline and timeouts veto).
	Vetoes *prometheus.CounterVec
	// Timeouts counts missed deadlines by phase, callback and what they counted as (veto,
	// consent, or none for the phases that cannot veto).
	Timeouts *prometheus.CounterVec
	// ControlRequests counts control socket requests by op and per-item response (success,
	// not-found, operation-not-supported, operation-failed), or denied and bad-request for
	// requests refused as a whole.
	ControlRequests *prometheus.CounterVec
}

// NewPhases creates the collectors and registers them with reg. Callback durations and errors go
// to m's callback_duration_seconds and callback_errors_total. It panics only if reg already holds
// collectors of the same names (a programming error).
func NewPhases(reg prometheus.Registerer, m *Metrics) *Phases {
	p := &Phases{
		m: m,
		Vetoes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "vetoes_total",
			Help: "Changes vetoed by a callback, by phase (add_start, query_remove), interface class, callback and reason (error, timeout).",
		}, []string{"phase", "interface_class", "callback", "reason"}),
		Timeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "phase_timeouts_total",
			Help: "Callbacks that missed the deadline of a two-phase add or removal, by phase, callback and what it counted as (veto, consent, none).",
		}, []string{"phase", "callback", "counted_as"}),
		ControlRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "control_requests_total",
			Help: "Items of control socket requests by op and response (success, not-found, operation-not-supported, operation-failed), and requests refused whole (denied, bad-request).",
		}, []string{"op", "response"}),
	}
	reg.MustRegister(p.Vetoes, p.Timeouts, p.ControlRequests)
	for _, op := range []string{"online", "offline"} {
		for _, r := range []string{"success", "not-found", "operation-not-supported", "operation-failed"} {
			p.ControlRequests.WithLabelValues(op, r)
		}
	}
	for _, r := range []string{"success", "operation-failed"} {
		p.ControlRequests.WithLabelValues("reload", r)
	}
	return p
}

// InitCallback creates the per-callback series of owner at zero.
func (p *Phases) InitCallback(owner, phase, class string) {
	p.m.InitCallback(owner)
	p.Vetoes.WithLabelValues(phase, class, owner, "error")
	p.Vetoes.WithLabelValues(phase, class, owner, "timeout")
}

// SyncCallDone implements notify.SyncObserver. A vetoing answer is counted in Vetoes, not as a
// callback error.
func (p *Phases) SyncCallDone(owner, phase string, took time.Duration, err error) {
	p.m.CallbackDuration.With(owner).Observe(took)
	if err != nil && phase != "add_start" && phase != "query_remove" {
		p.m.CallbackErrors.WithLabelValues(owner).Inc()
	}
}

// Vetoed implements notify.SyncObserver.
func (p *Phases) Vetoed(owner, phase, class string, timedOut bool) {
	reason := "error"
	if timedOut {
		reason = "timeout"
	}
	p.Vetoes.WithLabelValues(phase, class, owner, reason).Inc()
}

// TimedOut implements notify.SyncObserver.
func (p *Phases) TimedOut(owner, phase string, consent bool) {
	counted := "none"
	switch {
	case phase != "add_start" && phase != "query_remove":
	case consent:
		counted = "consent"
	default:
		counted = "veto"
	}
	p.Timeouts.WithLabelValues(phase, owner, counted).Inc()
}

// QueueOverflow implements notify.SyncObserver: calls dropped from a full queue count in
// callback_queue_overflows_total, as the resynchronisations of device interface registrations do.
func (p *Phases) QueueOverflow(owner string, dropped int) { p.m.QueueOverflow(owner, dropped) }

// ControlRequest counts one item of a control request, or a request refused whole.
func (p *Phases) ControlRequest(op, response string) {
	if op == "" {
		op = "unknown"
	}
	p.ControlRequests.WithLabelValues(op, response).Inc()
}
