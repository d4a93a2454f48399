package stsfake

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"
)

// Gate is a TLS reverse proxy in front of an emulator that forwards only
// requests whose Authorization is "Bearer <token>" for a token the STS
// issued, unexpired, with one of the gate's scopes. It speaks HTTP/1.1 and
// HTTP/2, so gRPC (Pub/Sub) passes as well as JSON (Cloud Storage); the
// emulator behind it is reached in plain text (h2c for gRPC).
type Gate struct {
	Addr string // 127.0.0.1:PORT, TLS
	sts  *STS
	// scopes: a token must hold one of them.
	scopes []string
	grpc   bool
	srv    *http.Server

	mu    sync.Mutex
	stats GateStats
	seen  map[string]bool
}

// LateGrace tells a token used to its last moment from one kept too long.
// Google's auth library serves a token close to its expiry while it asks
// for the next one (and, if that fails, until it expires), so a request
// may leave the client with a token that has expired when the request
// arrives: refused, as Google would, and retried by the block. A client
// that kept a token it should have replaced presents it later than this.
const LateGrace = time.Second

// GateStats count the requests the gate saw.
type GateStats struct {
	Accepted int
	// Refused, by reason: "missing", "unknown", "expired", "scope", and
	// "late": a token that expired less than LateGrace before the request
	// arrived (see LateGrace).
	Refused map[string]int
	// Tokens is how many distinct tokens were accepted.
	Tokens int
	// MinLeft is the least lifetime an accepted token had left.
	MinLeft time.Duration
}

// StartGate serves on a free port of 127.0.0.1 with cert and forwards to
// upstream (host:port); grpc says the emulator speaks gRPC.
func StartGate(sts *STS, upstream string, cert tls.Certificate, grpc bool, scopes ...string) (*Gate, error) {
	g := &Gate{sts: sts, scopes: scopes, grpc: grpc, seen: map[string]bool{}}
	g.stats.Refused = map[string]int{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", upstream
			pr.Out.Host = upstream
		},
		FlushInterval: -1,
		ErrorLog:      discardLog,
	}
	if grpc {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		rp.Transport = &http.Transport{Protocols: &p}
	}
	g.srv = &http.Server{Handler: g.check(rp), ErrorLog: discardLog, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	g.Addr = ln.Addr().String()
	go g.srv.ServeTLS(ln, "", "")
	return g, nil
}

// Close stops the gate.
func (g *Gate) Close() { g.srv.Close() }

// Stats returns a copy of the counters.
func (g *Gate) Stats() GateStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.stats
	st.Refused = map[string]int{}
	for k, v := range g.stats.Refused {
		st.Refused[k] = v
	}
	return st
}

// refusal is how the gate counts a refused request: by the verdict's
// reason, "expired" split into "late" (within LateGrace) and "expired".
func refusal(v Verdict) string {
	if v.Reason == "expired" && v.Left > -LateGrace {
		return "late"
	}
	return v.Reason
}

func (g *Gate) check(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		v := Verdict{Reason: "missing"}
		if ok && tok != "" {
			v = g.sts.Check(tok, time.Now(), g.scopes)
		}
		g.mu.Lock()
		if v.OK {
			g.stats.Accepted++
			if !g.seen[tok] {
				g.seen[tok] = true
				g.stats.Tokens++
			}
			if g.stats.Accepted == 1 || v.Left < g.stats.MinLeft {
				g.stats.MinLeft = v.Left
			}
		} else {
			g.stats.Refused[refusal(v)]++
		}
		g.mu.Unlock()
		if !v.OK {
			g.refuse(w, v.Reason)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refuse answers as Google's front ends do: gRPC UNAUTHENTICATED (16) or
// HTTP 401 with a JSON error.
func (g *Gate) refuse(w http.ResponseWriter, reason string) {
	msg := "request had invalid authentication credentials (stsfake gate: token " + reason + ")"
	if g.grpc {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", "16")
		w.Header().Set("Grpc-Message", msg)
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	w.Write([]byte(`{"error":{"code":401,"message":"` + msg + `","status":"UNAUTHENTICATED"}}`))
}
