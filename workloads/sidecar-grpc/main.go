// strata-sidecar-grpc: the monitoring sidecar's gRPC front end, in front of Triton.
//
// The supervisor (strata_workloads/serve/supervisor.py) starts it with the flags that
// serve/grpc_front_end.py renders from the sidecar's config, restarts it if it dies, merges
// its metrics snapshots and analyses the samples it hands over; the HTTP front end stays in
// the Python workers. It exists because the Python gRPC hop costs more than the
// ModelDeployment's latency and throughput goals allow (tests/benchmarks/bench_sidecar.py).
//
// It prints "listening" on stdout once its port is open, and nothing else there.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
)

// describe prints the constants the Python side must agree with (the contract test reads it).
func describe() {
	out, _ := json.Marshal(map[string]any{
		"latencyBuckets": latencyBuckets, "sizeBuckets": sizeBuckets, "maxModelLabels": maxModelLabels,
		"maxSampleBytes": maxSampleBytes, "maxPendingSamples": maxPendingSamples,
		"snapshotSeconds": snapshotInterval.Seconds(), "bucketSlots": bucketSlots, "bucketProbes": bucketProbes,
		"requestIdHeader": requestIDHeader, "retryAfterHeader": retryAfterHeader, "healthMethods": healthMethods,
		"forbiddenPrefixes": forbiddenPrefixes, "missingKeyMessage": missingKeyMessage,
		"invalidKeyMessage": invalidKeyMessage,
	})
	fmt.Println(string(out))
}

func main() {
	listen := flag.String("listen", "0.0.0.0:8001", "address clients call")
	upstream := flag.String("upstream", "127.0.0.1:18001", "Triton's gRPC address")
	timeout := flag.Float64("timeout", 300, "seconds an upstream call may take when the client set no deadline")
	keysDir := flag.String("api-keys-dir", "", "one file per API key (a mounted Secret); empty: no auth")
	bucketsFile := flag.String("rate-limit-file", "", "the shared token buckets (ratelimit.py); empty: no limit")
	rate := flag.Float64("rate", 0, "requests per second per identity")
	burst := flag.Float64("burst", 0, "bucket size")
	per := flag.String("per", "apiKey", "apiKey, clientIP or global")
	auditRate := flag.Float64("audit-rate", 0, "share of inference calls audited")
	driftRate := flag.Float64("drift-rate", 0, "share of inference calls analysed for drift")
	driftPerSecond := flag.Float64("drift-per-second", 50, "cap on drift samples per second")
	samplesSocket := flag.String("samples-socket", "", "the supervisor's Unix socket for samples")
	connections := flag.Int("upstream-connections", 4, "connections to Triton, used in turn")
	metricsDir := flag.String("metrics-dir", "", "where metrics snapshots go")
	describeOnly := flag.Bool("describe", false, "print the constants shared with the Python side and exit")
	flag.Parse()
	if *describeOnly {
		describe()
		return
	}
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("grpc-front-end ")
	if *metricsDir == "" {
		log.Fatal("-metrics-dir is required")
	}
	if *per != "apiKey" && *per != "clientIP" && *per != "global" {
		log.Fatalf("-per: apiKey, clientIP or global, got %q", *per)
	}
	// Outliving the supervisor would keep the port and serve without anyone watching.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0, 0, 0); err != nil {
		log.Printf("cannot ask to be stopped with the supervisor: %v", err)
	}
	encoding.RegisterCodec(rawCodec{})

	var keys *apiKeys
	if *keysDir != "" {
		keys = newAPIKeys(*keysDir)
		go keys.watch(5 * time.Second)
	}
	var buckets *sharedBuckets
	if *bucketsFile != "" {
		var err error
		if buckets, err = openSharedBuckets(*bucketsFile, *rate, *burst); err != nil {
			log.Fatalf("rate limiter: %v", err)
		}
	}
	m := newMetrics()
	s := newSampler(*auditRate, *driftRate, *driftPerSecond, m)
	if s.enabled() {
		if *samplesSocket == "" {
			log.Fatal("-samples-socket is required when sampling")
		}
		go s.send(*samplesSocket)
	}
	conns := make([]*grpc.ClientConn, *connections)
	for i := range conns {
		conn, err := grpc.NewClient(*upstream, grpc.WithTransportCredentials(insecure.NewCredentials()),
			// Triton starting or restarting: try again within a second, not grpc's default
			// backoff of up to two minutes (calls would fail long after Triton is back).
			grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: 5 * time.Second, Backoff: backoff.Config{
				BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second}}),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<31-1), grpc.MaxCallSendMsgSize(1<<31-1)))
		if err != nil {
			log.Fatalf("upstream %s: %v", *upstream, err)
		}
		// Connect now, so the first call does not pay for it; reconnects happen by themselves.
		conn.Connect()
		conns[i] = conn
	}
	p := &proxy{upstreams: conns, gateway: newGateway(keys, buckets, *per), metrics: m, sampler: s,
		defaultTimeout: time.Duration(*timeout * float64(time.Second))}
	server := grpc.NewServer(grpc.UnknownServiceHandler(p.handle),
		grpc.MaxRecvMsgSize(1<<31-1), grpc.MaxSendMsgSize(1<<31-1))
	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("cannot listen for gRPC on %s: %v", *listen, err)
	}
	stop, published := make(chan struct{}), make(chan struct{})
	go m.publish(*metricsDir, stop, published)
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		log.Print("stopping: finishing calls in flight")
		timer := time.AfterFunc(10*time.Second, server.Stop)
		server.GracefulStop()
		timer.Stop()
	}()
	log.Printf("serving gRPC on %s for Triton at %s", listener.Addr(), *upstream)
	fmt.Println("listening")
	if err := server.Serve(listener); err != nil {
		log.Fatalf("serving: %v", err)
	}
	close(stop)
	<-published
	if s.enabled() {
		close(s.queue)
		select {
		case <-s.sent:
		case <-time.After(5 * time.Second):
		}
	}
}
