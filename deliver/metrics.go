package deliver

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Queue's Prometheus collectors.
type metrics struct {
	events     *prometheus.CounterVec
	deliveries *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	endToEnd   prometheus.Histogram
	depth      *prometheus.GaugeVec
	filterErrs *prometheus.CounterVec
	// storeHealthy is 0 while commits fail (Queue.Healthy says why).
	storeHealthy prometheus.Gauge
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "walhook_events_total", Help: "Row changes read, by entity and action.",
		}, []string{"entity", "action"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "walhook_deliveries_total", Help: "Delivery attempts by outcome: success, retry (failed, will retry), failed (for good).",
		}, []string{"webhook", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "walhook_attempt_duration_seconds", Help: "Duration of one delivery attempt.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 13),
		}, []string{"webhook"}),
		endToEnd: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "walhook_end_to_end_seconds", Help: "From the transaction's commit to a 2xx answer.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 16),
		}),
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "walhook_queue_depth", Help: "Pending deliveries per webhook.",
		}, []string{"webhook"}),
		filterErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "walhook_filter_errors_total", Help: "Events a webhook's when could not decide on (not sent), per webhook.",
		}, []string{"webhook"}),
		storeHealthy: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "walhook_store_healthy", Help: "1 while the store commits, 0 while its commits fail (reading the WAL then pauses).",
		}),
	}
	m.storeHealthy.Set(1)
	if r != nil {
		m.events = register(r, m.events)
		m.deliveries = register(r, m.deliveries)
		m.duration = register(r, m.duration)
		m.endToEnd = register(r, m.endToEnd)
		m.depth = register(r, m.depth)
		m.filterErrs = register(r, m.filterErrs)
		m.storeHealthy = register(r, m.storeHealthy)
	}
	return m
}

// dispatcherMetrics are one webhook's series, looked up once rather than per
// delivery.
type dispatcherMetrics struct {
	depth                  prometheus.Gauge
	duration               prometheus.Observer
	success, retry, failed prometheus.Counter
	filterErrs             prometheus.Counter
}

func (m *metrics) forHook(name string) dispatcherMetrics {
	return dispatcherMetrics{
		depth:    m.depth.WithLabelValues(name),
		duration: m.duration.WithLabelValues(name),
		success:  m.deliveries.WithLabelValues(name, "success"),
		retry:    m.deliveries.WithLabelValues(name, "retry"),
		failed:   m.deliveries.WithLabelValues(name, "failed"),

		filterErrs: m.filterErrs.WithLabelValues(name),
	}
}

// register registers c, or returns the equal collector registered before
// (a second Queue on the same registry shares the series).
func register[C prometheus.Collector](r prometheus.Registerer, c C) C {
	if err := r.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if prev, ok := are.ExistingCollector.(C); ok {
				return prev
			}
		}
	}
	return c
}
