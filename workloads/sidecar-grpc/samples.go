package main

// Chooses requests for the audit log and drift statistics, as serve/metrics.py's Sampler
// does for the Python front ends, and hands them to the supervisor over a Unix socket in
// the frames serve/sample_socket.py reads: for each sample, a little-endian uint32 length
// and the metadata's JSON, then the request's and the response's bytes, each a uint32
// length (0xFFFFFFFF: none) and the bytes. Nothing here blocks the request path: samples
// wait in a bounded queue and are dropped, counted, when the supervisor falls behind.

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"log"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

const (
	// Larger samples go to the supervisor as metadata only (audited without tensors).
	maxSampleBytes    = 4 * 1024 * 1024
	maxPendingSamples = 256
	noBytes           = 0xFFFFFFFF
)

type sampleMeta struct {
	Time           float64 `json:"time"`
	RequestID      string  `json:"requestId"`
	Protocol       string  `json:"protocol"`
	Model          string  `json:"model"`
	Key            string  `json:"key"`
	Client         string  `json:"client"`
	Outcome        string  `json:"outcome"`
	LatencyMs      float64 `json:"latencyMs"`
	Audit          bool    `json:"audit"`
	Analyse        bool    `json:"analyse"`
	TensorsOmitted bool    `json:"tensorsOmitted,omitempty"`
}

type sample struct {
	meta              sampleMeta
	request, response []byte
}

type sampler struct {
	auditRate, driftRate, driftPerSecond float64
	metrics                              *metrics
	queue                                chan sample
	sent                                 chan struct{} // closed when send has handed over the last sample

	mu        sync.Mutex
	allowance float64
	checked   time.Time
}

func newSampler(auditRate, driftRate, driftPerSecond float64, m *metrics) *sampler {
	return &sampler{auditRate: auditRate, driftRate: driftRate, driftPerSecond: driftPerSecond, metrics: m,
		queue: make(chan sample, maxPendingSamples), sent: make(chan struct{}), allowance: driftPerSecond, checked: time.Now()}
}

func (s *sampler) enabled() bool { return s.auditRate > 0 || s.driftRate > 0 }

// driftAllowed caps drift samples per second (a token bucket of driftPerSecond).
func (s *sampler) driftAllowed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.allowance = min(s.driftPerSecond, s.allowance+now.Sub(s.checked).Seconds()*s.driftPerSecond)
	s.checked = now
	if s.allowance >= 1 {
		s.allowance--
		return true
	}
	return false
}

// offer samples a finished call; meta is built only for a chosen one.
func (s *sampler) offer(meta func() sampleMeta, request, response []byte) {
	if !s.enabled() {
		return
	}
	audit := rand.Float64() < s.auditRate
	drift := s.driftRate > 0 && rand.Float64() < s.driftRate && response != nil && s.driftAllowed()
	if !audit && !drift {
		return
	}
	record := sample{meta: meta(), request: request, response: response}
	record.meta.Audit, record.meta.Analyse = audit, drift
	if len(request)+len(response) > maxSampleBytes {
		if !audit {
			return
		}
		record.meta.Analyse, record.meta.TensorsOmitted = false, true
		record.request, record.response = nil, nil
	}
	select {
	case s.queue <- record:
	default:
		s.metrics.dropped(1)
	}
}

// send writes samples to the supervisor's socket, reconnecting when it goes away.
func (s *sampler) send(socket string) {
	defer close(s.sent)
	var conn net.Conn
	var out *bufio.Writer
	for record := range s.queue {
		if conn == nil {
			var err error
			if conn, err = net.Dial("unix", socket); err != nil {
				log.Printf("cannot hand samples to the supervisor at %s: %v", socket, err)
				s.metrics.dropped(1)
				conn = nil
				time.Sleep(100 * time.Millisecond)
				continue
			}
			out = bufio.NewWriterSize(conn, 256*1024)
		}
		err := writeSample(out, record)
		if err == nil && len(s.queue) == 0 {
			err = out.Flush()
		}
		if err != nil {
			log.Printf("handing samples to the supervisor: %v", err)
			s.metrics.dropped(1)
			conn.Close()
			conn = nil
		}
	}
	if conn != nil {
		out.Flush()
		conn.Close()
	}
}

func writeSample(out *bufio.Writer, record sample) error {
	meta, err := json.Marshal(record.meta)
	if err != nil {
		return err
	}
	var length [4]byte
	for _, part := range [][]byte{meta, record.request, record.response} {
		size := uint32(len(part))
		if part == nil {
			size = noBytes
		}
		binary.LittleEndian.PutUint32(length[:], size)
		if _, err := out.Write(length[:]); err != nil {
			return err
		}
		if _, err := out.Write(part); err != nil {
			return err
		}
	}
	return nil
}
