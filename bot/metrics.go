package bot

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are issuebot's Prometheus metrics. Labels never carry ids or secrets.
type Metrics struct {
	reg             *prometheus.Registry
	events          *prometheus.CounterVec
	eventLag        prometheus.Histogram
	guanceRequests  *prometheus.CounterVec
	guanceThrottles prometheus.Counter
	polls           prometheus.Counter
	pollDuration    prometheus.Histogram
	cardsSent       prometheus.Counter
	cardFailures    prometheus.Counter
	cardLatency     prometheus.Histogram
	cardsQueued     prometheus.Gauge
	repliesToGuance prometheus.Counter
	replyFailures   prometheus.Counter
	replyLatency    prometheus.Histogram
	repliesQueued   prometheus.Gauge
	queued          *prometheus.GaugeVec
	repliesToChat   prometheus.Counter
	replyStaleness  prometheus.Histogram
	cardPatches     prometheus.Counter
	statusChanges   *prometheus.CounterVec
	watched         prometheus.Gauge
	scanOldest      prometheus.Gauge
	sweepPages      prometheus.Counter
	replyScans      prometheus.Counter
	threadDrops     prometheus.Counter
	jobRetries      *prometheus.CounterVec
	jobsDropped     *prometheus.CounterVec
	routes          prometheus.Gauge
	unrouted        prometheus.Counter
	commands        *prometheus.CounterVec
	commandsRefused prometheus.Counter
	chatEvents      *prometheus.CounterVec
	digested        prometheus.Counter
	hooks           *prometheus.CounterVec
	hints           prometheus.Counter
}

// NewMetrics registers issuebot's metrics (plus Go and process collectors) on reg;
// nil means a fresh registry.
func NewMetrics(reg *prometheus.Registry) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		reg: reg,
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "issuebot_feishu_events_total",
			Help: "Feishu events and card callbacks received, by type.",
		}, []string{"type"}),
		eventLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "issuebot_feishu_event_lag_seconds",
			Help:    "Time from Feishu emitting an event to the bot receiving it.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 15, 60, 300},
		}),
		guanceRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "issuebot_guance_requests_total",
			Help: "Requests sent to the Guance OpenAPI, by HTTP status (\"error\" when no answer came). 401 is Guance's throttle answer.",
		}, []string{"code"}),
		guanceThrottles: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "issuebot_guance_throttled_total",
			Help: "Guance answers that throttled the bot (HTTP 401 with a current-limiting errorCode).",
		}),
		polls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "issuebot_polls_total",
			Help: "Successful polls of Guance for new issues.",
		}),
		pollDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "issuebot_poll_duration_seconds",
			Help:    "Duration of one poll for new issues, waiting for the Guance budget included.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60},
		}),
		cardsSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "issuebot_cards_sent_total",
			Help: "Issue cards posted to Feishu.",
		}),
		cardFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "issuebot_card_failures_total",
			Help: "Card posts Feishu refused for a reason a retry cannot cure (they are retried slowly).",
		}),
		cardLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "issuebot_card_latency_seconds",
			Help:    "Time from an issue's createAt in Guance to its card in Feishu.",
			Buckets: []float64{1, 2, 5, 10, 15, 20, 30, 60, 120, 300},
		}),
		cardsQueued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "issuebot_cards_queued",
			Help: "Issue cards waiting to be posted.",
		}),
		repliesToGuance: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "issuebot_replies_to_guance_total",
			Help: "Chat messages posted to Guance as issue replies.",
		}),
		replyFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "issuebot_reply_failures_total",
			Help: "Chat messages Guance refused for good (the chat was told).",
		}),
		replyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "issuebot_reply_latency_seconds",
			Help:    "Time from a chat message reaching the bot to its Guance reply.",
			Buckets: []float64{0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800},
		}),
		repliesQueued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "issuebot_replies_queued",
			Help: "Chat messages waiting to be posted to Guance.",
		}),
		queued: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "issuebot_jobs_queued",
			Help: "Jobs waiting, by queue: thread (Guance replies for the chat), patches (cards to re-render), status (status changes).",
		}, []string{"queue"}),
		repliesToChat: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "issuebot_replies_to_chat_total",
			Help: "Guance replies posted into card threads.",
		}),
		replyStaleness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "issuebot_reply_sync_staleness_seconds",
			Help:    "Time from a reply's createAt in Guance to its post in the card's thread.",
			Buckets: []float64{5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600},
		}),
		cardPatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "issuebot_card_patches_total",
			Help: "Cards re-rendered in place.",
		}),
		statusChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "issuebot_status_changes_total",
			Help: "Issue status changes made from the chat, by path: button (answered in the callback) or queued.",
		}, []string{"path"}),
		watched: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "issuebot_issues_watched",
			Help: "Carded issues still watched for Guance changes and replies.",
		}),
		scanOldest: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "issuebot_reply_scan_oldest_seconds",
			Help: "The longest any watched open issue has waited for its replies to be read (reply-sync staleness bound).",
		}),
		sweepPages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "issuebot_open_list_pages_total",
			Help: "Pages of the open-issue list read to find status, level and title changes.",
		}),
		replyScans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "issuebot_reply_scans_total",
			Help: "Reply pages read from Guance to find new replies.",
		}),
		jobRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "issuebot_job_retries_total",
			Help: "Failed attempts of queued jobs that will be retried, by queue and reason (transient, throttled, refused, internal).",
		}, []string{"queue", "reason"}),
		jobsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "issuebot_jobs_dropped_total",
			Help: "Queued jobs given up for good, by queue and reason.",
		}, []string{"queue", "reason"}),
		threadDrops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "issuebot_thread_posts_dropped_total",
			Help: "Replies given up on after failing to reach a chat for hours (each is logged as an error).",
		}),
		routes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "issuebot_routes",
			Help: "Routes bound from the chats (channel and level → chat).",
		}),
		unrouted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "issuebot_issues_unrouted_total",
			Help: "New issues no route took while FEISHU_CHAT_ID is empty (no chat got them).",
		}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "issuebot_commands_total",
			Help: "Commands and notices answered, by kind (help, status, list, bind, unbind, welcome, a notice's kind).",
		}, []string{"kind"}),
		commandsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "issuebot_commands_refused_total",
			Help: "bind and unbind refused by the group's rule (only its owner and managers may edit it).",
		}),
		hooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "issuebot_guance_webhooks_total",
			Help: "Guance webhook calls, by result (ok, refused: bad token, too_large, error).",
		}, []string{"result"}),
		hints: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "issuebot_guance_webhook_hints_total",
			Help: "Issues named by Guance webhooks (carded ones move to the front of the watcher; unknown ones ask for a poll).",
		}),
		digested: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "issuebot_issues_digested_total",
			Help: "New issues that went into a chat's storm digest instead of a card of their own.",
		}),
		chatEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "issuebot_chat_events_total",
			Help: "The bot added to (welcome), removed from or disbanded with a group (goodbye).",
		}, []string{"event"}),
	}
	reg.MustRegister(m.events, m.eventLag, m.guanceRequests, m.guanceThrottles, m.polls, m.pollDuration,
		m.cardsSent, m.cardFailures, m.cardLatency, m.cardsQueued,
		m.repliesToGuance, m.replyFailures, m.replyLatency, m.repliesQueued,
		m.queued, m.repliesToChat, m.replyStaleness, m.cardPatches, m.statusChanges, m.watched, m.scanOldest,
		m.sweepPages, m.replyScans, m.threadDrops, m.jobRetries, m.jobsDropped,
		m.routes, m.unrouted, m.commands, m.commandsRefused, m.chatEvents, m.digested, m.hooks, m.hints,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Register adds more collectors (e.g. gauges owned by other parts) to the registry.
func (m *Metrics) Register(cs ...prometheus.Collector) { m.reg.MustRegister(cs...) }

func (m *Metrics) observeEvent(typ string, now, emitted time.Time) {
	m.events.WithLabelValues(typ).Inc()
	if !emitted.IsZero() {
		m.eventLag.Observe(max(now.Sub(emitted), 0).Seconds())
	}
}

// setRoutes sets the routes gauge.
func (m *Metrics) setRoutes(n int) { m.routes.Set(float64(n)) }

// GuanceThrottled counts one throttled Guance answer; pass it to guance.WithOnThrottle.
func (m *Metrics) GuanceThrottled() { m.guanceThrottles.Inc() }

// InstrumentGuance wraps the transport used for Guance so that every request is
// counted by status code.
func (m *Metrics) InstrumentGuance(rt http.RoundTripper) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(r)
		if err != nil {
			m.guanceRequests.WithLabelValues("error").Inc()
			return resp, err
		}
		m.guanceRequests.WithLabelValues(strconv.Itoa(resp.StatusCode)).Inc()
		return resp, nil
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
