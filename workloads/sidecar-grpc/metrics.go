package main

// The data path's metrics, written as the Python workers write theirs (serve/metrics.py:
// DataPathMetrics.snapshot): a JSON snapshot of this process's totals in
// <metrics dir>/worker-<pid>.json, replaced atomically every snapshotInterval. The
// supervisor merges every snapshot at scrape time, so /metrics is one view of both
// protocols.

import (
	"encoding/json"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"
)

const (
	snapshotInterval = 500 * time.Millisecond
	// Model names come from clients; past this many distinct ones the rest are "other".
	maxModelLabels = 64
)

var (
	latencyBuckets = []float64{0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0}
	sizeBuckets    = []float64{256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864}
)

type requestLabels struct{ protocol, call, model, outcome, key string }
type histogramLabels struct{ protocol, model string }

type histogram struct {
	latency      []int64
	latencySum   float64
	requestSize  []int64
	requestSum   int64
	responseSize []int64
	responseSum  int64
}

type metrics struct {
	mu             sync.Mutex
	requests       map[requestLabels]int64
	histograms     map[histogramLabels]*histogram
	inflight       int64
	samplesDropped int64
	models         map[string]string // model -> label
}

func newMetrics() *metrics {
	return &metrics{requests: map[requestLabels]int64{}, histograms: map[histogramLabels]*histogram{},
		models: map[string]string{}}
}

// modelLabel caps distinct model labels; call with mu held.
func (m *metrics) modelLabel(model string) string {
	if model == "" {
		return ""
	}
	label, ok := m.models[model]
	if !ok {
		label = "other"
		if len(m.models) < maxModelLabels {
			label = model
		}
		m.models[model] = label
	}
	return label
}

func (m *metrics) count(call, model, outcome, key string) {
	m.mu.Lock()
	m.requests[requestLabels{"grpc", call, m.modelLabel(model), outcome, key}]++
	m.mu.Unlock()
}

// bucketIndex is Python's bisect_left: the first bound >= x (Prometheus' `le`).
func bucketIndex(bounds []float64, x float64) int {
	return sort.SearchFloat64s(bounds, x)
}

func (m *metrics) observe(model string, seconds float64, sent, received int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	labels := histogramLabels{"grpc", m.modelLabel(model)}
	h := m.histograms[labels]
	if h == nil {
		h = &histogram{latency: make([]int64, len(latencyBuckets)+1), requestSize: make([]int64, len(sizeBuckets)+1),
			responseSize: make([]int64, len(sizeBuckets)+1)}
		m.histograms[labels] = h
	}
	h.latency[bucketIndex(latencyBuckets, seconds)]++
	h.latencySum += seconds
	h.requestSize[bucketIndex(sizeBuckets, float64(sent))]++
	h.requestSum += int64(sent)
	h.responseSize[bucketIndex(sizeBuckets, float64(received))]++
	h.responseSum += int64(received)
}

func (m *metrics) addInflight(delta int64) {
	m.mu.Lock()
	m.inflight += delta
	m.mu.Unlock()
}

func (m *metrics) dropped(n int64) {
	m.mu.Lock()
	m.samplesDropped += n
	m.mu.Unlock()
}

func (m *metrics) snapshot() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	requests := make([][]any, 0, len(m.requests))
	for l, n := range m.requests {
		requests = append(requests, []any{l.protocol, l.call, l.model, l.outcome, l.key, n})
	}
	histograms := make([][]any, 0, len(m.histograms))
	for l, h := range m.histograms {
		histograms = append(histograms, []any{l.protocol, l.model, h.latency, h.latencySum, h.requestSize,
			h.requestSum, h.responseSize, h.responseSum})
	}
	data, err := json.Marshal(map[string]any{"pid": os.Getpid(), "requests": requests, "histograms": histograms,
		"inflight": map[string]int64{"grpc": m.inflight}, "samplesDropped": m.samplesDropped})
	if err != nil {
		log.Fatalf("metrics snapshot: %v", err)
	}
	return data
}

// publish writes snapshots until stop is closed, then once more (nothing counted is lost).
func (m *metrics) publish(dir string, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	path := filepath.Join(dir, "worker-"+strconv.Itoa(os.Getpid())+".json")
	temporary := path[:len(path)-len(".json")] + ".tmp"
	var last []byte
	ticker := time.NewTicker(snapshotInterval)
	defer ticker.Stop()
	for {
		current := m.snapshot()
		if string(current) != string(last) {
			if err := os.WriteFile(temporary, current, 0o644); err != nil {
				log.Printf("writing metrics: %v", err)
			} else if err := os.Rename(temporary, path); err != nil {
				log.Printf("writing metrics: %v", err)
			} else {
				last = current
			}
		}
		select {
		case <-stop:
			if string(m.snapshot()) != string(last) {
				continue // one more round with the final counts
			}
			return
		case <-ticker.C:
		}
	}
}
