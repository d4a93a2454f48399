package ehsink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"
	"github.com/gorilla/websocket"
)

// Transports (AZURE_EH_TRANSPORT).
const (
	transportAMQP = "amqp"       // AMQP 1.0 over TCP port 5671 (TLS)
	transportWS   = "websockets" // AMQP 1.0 over WebSockets, port 443 (wss)
	transportAuto = "auto"       // AMQP, else WebSockets; see Connect
)

// amqpFallbackAfter bounds auto's AMQP attempt before it tries WebSockets. A
// refused port 5671 fails within a second; a firewall that drops packets
// hangs until this. A healthy AMQP connect (TCP, TLS, SASL, the CBS token,
// the sender link: about ten round trips) takes well under it even on a
// 300 ms cellular link.
const amqpFallbackAfter = 15 * time.Second

// wsSubprotocol is the WebSocket subprotocol of AMQP 1.0 (OASIS AMQP
// WebSocket Binding), which Event Hubs requires.
const wsSubprotocol = "AMQPWSB10"

// wsHandshakeTimeout bounds the TCP connect, proxy CONNECT, TLS and HTTP
// upgrade of a WebSocket connection.
const wsHandshakeTimeout = 30 * time.Second

// producerOptions keeps the SDK's own retries short: the pipeline retries with
// its backoff and reports the error on /ready meanwhile, while the SDK's
// defaults would block a send for ~30 s per failure. newWS, when set, makes
// the client speak AMQP over WebSockets.
func producerOptions(newWS func(context.Context, azeventhubs.WebSocketConnParams) (net.Conn, error)) *azeventhubs.ProducerClientOptions {
	return &azeventhubs.ProducerClientOptions{
		ApplicationID:    "cloud-block",
		RetryOptions:     azeventhubs.RetryOptions{MaxRetries: 2, RetryDelay: 200 * time.Millisecond, MaxRetryDelay: 2 * time.Second},
		NewWebSocketConn: newWS,
	}
}

// wsDialer opens the WebSocket connections of one namespace. The SDK asks
// for wss://<namespace>/$servicebus/websocket; with a development emulator
// (UseDevelopmentEmulator=true, where AMQP is unencrypted too) it is ws://
// on the endpoint's port. HTTPS_PROXY / HTTP_PROXY / NO_PROXY choose a
// proxy as for every other destination (Go's rules); the proxy's
// credentials go in its URL and are sent as Proxy-Authorization.
type wsDialer struct {
	plain bool
	tls   *tls.Config // nil: the system's roots
}

func (d wsDialer) url(params azeventhubs.WebSocketConnParams) string {
	u := params.Host
	if d.plain {
		u = "ws://" + strings.TrimPrefix(u, "wss://")
	}
	return u
}

func (d wsDialer) dial(ctx context.Context, params azeventhubs.WebSocketConnParams) (net.Conn, error) {
	u := d.url(params)
	wd := websocket.Dialer{
		Proxy:            http.ProxyFromEnvironment,
		HandshakeTimeout: wsHandshakeTimeout,
		Subprotocols:     []string{wsSubprotocol},
		TLSClientConfig:  d.tls,
	}
	c, resp, err := wd.DialContext(ctx, u, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		if errors.Is(err, websocket.ErrBadHandshake) && resp != nil {
			return nil, fmt.Errorf("websocket %s: the server refused the upgrade: %s", u, resp.Status)
		}
		return nil, fmt.Errorf("websocket %s: %w", u, err)
	}
	if p := c.Subprotocol(); p != wsSubprotocol {
		c.Close()
		return nil, fmt.Errorf("websocket %s: the server chose subprotocol %q, not %s", u, p, wsSubprotocol)
	}
	return &wsConn{c: c}, nil
}

// viaProxy reports whether the environment sends this namespace's
// WebSocket connections through a proxy.
func (d wsDialer) viaProxy(fqdn string) bool {
	scheme := "https"
	if d.plain {
		scheme = "http"
	}
	p, err := http.ProxyFromEnvironment(&http.Request{URL: &url.URL{Scheme: scheme, Host: fqdn}})
	return err == nil && p != nil
}

// wsConn is a net.Conn over a WebSocket: AMQP frames travel as the bytes of
// binary messages, whose boundaries mean nothing. go-amqp reads from one
// goroutine and writes from another, which gorilla allows.
type wsConn struct {
	c *websocket.Conn
	r io.Reader // the message being read
}

func (w *wsConn) Read(p []byte) (int, error) {
	for {
		if w.r == nil {
			typ, r, err := w.c.NextReader()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) && ce.Code == websocket.CloseNormalClosure {
					return 0, io.EOF
				}
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, errors.New("websocket: a text message where AMQP frames were expected")
			}
			w.r = r
		}
		n, err := w.r.Read(p)
		if errors.Is(err, io.EOF) {
			w.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (w *wsConn) Write(p []byte) (int, error) {
	if err := w.c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close says goodbye (a close frame, best effort) and closes the socket.
func (w *wsConn) Close() error {
	_ = w.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	return w.c.Close()
}

func (w *wsConn) LocalAddr() net.Addr  { return w.c.LocalAddr() }
func (w *wsConn) RemoteAddr() net.Addr { return w.c.RemoteAddr() }

func (w *wsConn) SetDeadline(t time.Time) error {
	return errors.Join(w.c.SetReadDeadline(t), w.c.SetWriteDeadline(t))
}
func (w *wsConn) SetReadDeadline(t time.Time) error  { return w.c.SetReadDeadline(t) }
func (w *wsConn) SetWriteDeadline(t time.Time) error { return w.c.SetWriteDeadline(t) }
