package main

// Who is calling, may they, and the request ids: serve/gateway.py, serve/auth.py and
// serve/ratelimit.py of the Python front ends, with which this process shares the rate
// limiter's buckets (one memory-mapped file, so a key's limit holds across protocols).

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"
	"unsafe"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
)

const (
	anonymous = "anonymous" // no auth configured
	missing   = "missing"   // auth configured, no key presented
	invalid   = "invalid"   // a key that is not one of ours

	missingKeyMessage = "missing API key: send 'authorization: Bearer <key>' or 'x-api-key: <key>'"
	invalidKeyMessage = "invalid API key"

	// ratelimit.py's table: SLOTS entries of (owner hash, tokens, last update), probed PROBES deep.
	bucketSlots  = 4096
	bucketProbes = 8
	bucketsBytes = 3 * 8 * bucketSlots
)

type refusal struct {
	code       codes.Code
	message    string
	retryAfter float64
}

type gateway struct {
	keys      *apiKeys
	buckets   *sharedBuckets
	per       string
	idPrefix  string
	idCounter atomic.Uint64
}

func newGateway(keys *apiKeys, buckets *sharedBuckets, per string) *gateway {
	prefix := make([]byte, 6)
	if _, err := rand.Read(prefix); err != nil {
		log.Fatalf("no randomness for request ids: %v", err)
	}
	// Unique across processes and restarts: a random prefix per process, then a counter.
	return &gateway{keys: keys, buckets: buckets, per: per, idPrefix: hex.EncodeToString(prefix) + "-"}
}

func (g *gateway) requestID() string {
	return g.idPrefix + fmt.Sprintf("%x", g.idCounter.Add(1))
}

// presentedKey is auth.presented_key: `x-api-key: K`, else `authorization: Bearer K`.
func presentedKey(authorization, apiKey string) string {
	if apiKey != "" {
		return strings.TrimSpace(apiKey)
	}
	if len(authorization) >= 7 && strings.EqualFold(authorization[:7], "bearer ") {
		return strings.TrimSpace(authorization[7:])
	}
	return ""
}

// authenticate returns the key's name for labels and a refusal when the call may not pass.
func (g *gateway) authenticate(authorization, apiKey string) (string, *refusal) {
	if g.keys == nil {
		return anonymous, nil
	}
	presented := presentedKey(authorization, apiKey)
	if presented == "" {
		return missing, &refusal{code: codes.Unauthenticated, message: missingKeyMessage}
	}
	name, ok := g.keys.nameOf(presented)
	if !ok {
		return invalid, &refusal{code: codes.Unauthenticated, message: invalidKeyMessage}
	}
	return name, nil
}

func (g *gateway) limit(keyName, clientIP string) *refusal {
	if g.buckets == nil {
		return nil
	}
	identity := ""
	switch g.per {
	case "apiKey":
		identity = keyName
	case "clientIP":
		identity = clientIP
	}
	wait := g.buckets.acquire(identity)
	if wait <= 0 {
		return nil
	}
	// %g formats as Python's :g does, so both front ends word the refusal alike.
	return &refusal{code: codes.ResourceExhausted, retryAfter: wait, message: fmt.Sprintf(
		"rate limit of %g requests/s (burst %g) per %s exceeded; retry after %.3fs",
		g.buckets.rate, g.buckets.burst, g.per, wait)}
}

// ---- API keys ----

// apiKeys maps a presented key to its name (its file's name in the mounted Secret) by
// SHA-256 digest, re-reading the directory when it changes (kubelet swaps files atomically).
type apiKeys struct {
	dir       string
	mu        sync.RWMutex
	byDigest  map[[32]byte]string
	signature string
}

func newAPIKeys(dir string) *apiKeys {
	keys := &apiKeys{dir: dir, byDigest: map[[32]byte]string{}}
	keys.reload()
	return keys
}

func (k *apiKeys) nameOf(key string) (string, bool) {
	if key == "" {
		return "", false
	}
	digest := sha256.Sum256([]byte(key))
	k.mu.RLock()
	defer k.mu.RUnlock()
	name, ok := k.byDigest[digest]
	return name, ok
}

func (k *apiKeys) reload() {
	entries, err := os.ReadDir(k.dir)
	if err != nil {
		log.Printf("cannot read API keys from %s: %v", k.dir, err)
		return
	}
	var names []string
	var signature strings.Builder
	for _, entry := range entries {
		if strings.HasPrefix(entry.Name(), ".") {
			continue // kubelet's ..data and timestamped directories
		}
		names = append(names, entry.Name())
	}
	sort.Strings(names)
	for _, name := range names {
		info, err := os.Stat(filepath.Join(k.dir, name))
		if err != nil {
			log.Printf("cannot read API keys from %s: %v", k.dir, err)
			return
		}
		fmt.Fprintf(&signature, "%s\x00%d\x00%d\x00", name, info.ModTime().UnixNano(), info.Size())
	}
	if signature.String() == k.signature {
		return
	}
	byDigest := map[[32]byte]string{}
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(k.dir, name))
		if err == nil && !utf8.Valid(data) {
			err = fmt.Errorf("not UTF-8")
		}
		if err != nil {
			log.Printf("skipping API key file %s: %v", filepath.Join(k.dir, name), err)
			continue
		}
		if value := strings.TrimSpace(string(data)); value != "" {
			byDigest[sha256.Sum256([]byte(value))] = name
		}
	}
	k.mu.Lock()
	k.byDigest, k.signature = byDigest, signature.String()
	k.mu.Unlock()
	log.Printf("loaded %d API key(s) from %s", len(byDigest), k.dir)
}

func (k *apiKeys) watch(every time.Duration) {
	for range time.Tick(every) {
		k.reload()
	}
}

// ---- rate limits ----

// sharedBuckets is ratelimit.SharedBuckets over the same file: owners (int64), tokens and
// last-update times (float64, CLOCK_MONOTONIC seconds), guarded by flock across processes
// and by a mutex among this process's goroutines (flock does not exclude them).
type sharedBuckets struct {
	mu      sync.Mutex
	file    *os.File // kept open for flock
	owners  []int64
	tokens  []float64
	updated []float64
	rate    float64
	burst   float64
	hashes  map[string]int64 // identity -> identityHash, under mu
}

func openSharedBuckets(path string, rate, burst float64) (*sharedBuckets, error) {
	file, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	info, err := file.Stat()
	if err != nil {
		return nil, err
	}
	if info.Size() != bucketsBytes {
		return nil, fmt.Errorf("%s: %d bytes, expected %d", path, info.Size(), bucketsBytes)
	}
	memory, err := syscall.Mmap(int(file.Fd()), 0, bucketsBytes, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	base := unsafe.Pointer(&memory[0])
	b := &sharedBuckets{file: file, rate: rate, burst: burst, hashes: map[string]int64{},
		owners:  unsafe.Slice((*int64)(base), bucketSlots),
		tokens:  unsafe.Slice((*float64)(unsafe.Add(base, 8*bucketSlots)), bucketSlots),
		updated: unsafe.Slice((*float64)(unsafe.Add(base, 16*bucketSlots)), bucketSlots)}
	return b, nil
}

// identityHash is ratelimit._identity_hash: stable across processes, never 0 (a free slot).
func identityHash(identity string) int64 {
	digest := sha256.Sum256([]byte(identity))
	return int64(binary.LittleEndian.Uint64(digest[:8])>>1 | 1)
}

// CLOCK_MONOTONIC read once with a system call; after that, Go's own monotonic clock (the
// same clock, read through the vDSO) moves it on, so a limited call costs no extra syscall.
var monotonicBase, monotonicStart = func() (float64, time.Time) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		log.Fatalf("clock_gettime: %v", err)
	}
	return float64(ts.Sec) + float64(ts.Nsec)/1e9, time.Now()
}()

// monotonic is Python's time.monotonic(): CLOCK_MONOTONIC seconds, which every process reads alike.
func monotonic() float64 {
	return monotonicBase + time.Since(monotonicStart).Seconds()
}

// acquire takes one token for identity: 0 when allowed, else the seconds until one is due.
func (b *sharedBuckets) acquire(identity string) float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	key, ok := b.hashes[identity]
	if !ok {
		if len(b.hashes) > 65536 { // client IPs are unbounded
			clear(b.hashes)
		}
		key = identityHash(identity)
		b.hashes[identity] = key
	}
	start := int(uint64(key) % bucketSlots)
	fd := int(b.file.Fd())
	for syscall.Flock(fd, syscall.LOCK_EX) == syscall.EINTR {
	}
	defer syscall.Flock(fd, syscall.LOCK_UN)
	now := monotonic()
	slot, victim, oldest := -1, start, math.Inf(1)
	for probe := 0; probe < bucketProbes; probe++ {
		s := (start + probe) % bucketSlots
		owner := b.owners[s]
		if owner == key {
			slot = s
			break
		}
		if owner == 0 {
			b.owners[s], b.tokens[s], b.updated[s] = key, b.burst, now
			slot = s
			break
		}
		if b.updated[s] < oldest {
			victim, oldest = s, b.updated[s]
		}
	}
	if slot < 0 {
		slot = victim
		b.owners[slot], b.tokens[slot], b.updated[slot] = key, b.burst, now
	}
	available := math.Min(b.burst, b.tokens[slot]+(now-b.updated[slot])*b.rate)
	b.updated[slot] = now
	if available >= 1 {
		b.tokens[slot] = available - 1
		return 0
	}
	b.tokens[slot] = available
	return (1 - available) / b.rate
}
