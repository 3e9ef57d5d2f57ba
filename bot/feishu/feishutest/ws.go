package feishutest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/gorilla/websocket"
	larkws "github.com/larksuite/oapi-sdk-go/v3/ws"
)

// wsServiceID is the service_id handed out in the endpoint URL; the SDK echoes it in pings.
const wsServiceID = 42

// Ack is a long-connection client's answer to a delivered event.
type Ack struct {
	// Code is 200 when the handler succeeded, 500 when it failed or none was registered.
	Code int
	// Data is the handler's response, e.g. a card callback's toast JSON; nil for plain events.
	Data []byte
}

type wsState struct {
	conns    map[int]*wsConn
	changed  chan struct{} // closed and replaced whenever conns changes
	tickets  map[string]bool
	pending  map[string]chan Ack
	pings    int
	connects int
	frames   uint64
	closed   bool
}

func (ws *wsState) init() {
	ws.conns = map[int]*wsConn{}
	ws.changed = make(chan struct{})
	ws.tickets = map[string]bool{}
	ws.pending = map[string]chan Ack{}
}

// notifyLocked wakes WaitConnected. Callers hold s.mu.
func (ws *wsState) notifyLocked() {
	close(ws.changed)
	ws.changed = make(chan struct{})
}

type wsConn struct {
	id     int
	conn   *websocket.Conn
	wmu    sync.Mutex
	closed chan struct{}
	once   sync.Once
}

func (c *wsConn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.conn.WriteMessage(websocket.BinaryMessage, b)
}

func (c *wsConn) close() {
	c.once.Do(func() {
		close(c.closed)
		c.conn.Close()
	})
}

// wsEndpoint is the long-connection bootstrap, POST /callback/ws/endpoint.
func (s *Server) wsEndpoint(w *recorder, r *http.Request) {
	var req larkws.BootstrapRequest
	if !s.decode(w, r, &req) {
		return
	}
	if req.AppID != s.AppID || req.AppSecret != s.AppSecret {
		// Unverified: the platform's code for wrong credentials. The SDK treats every code other
		// than 0, 1 and 1000040343 in an HTTP 200 answer as a ClientError, which ends Start
		// instead of retrying; an HTTP status other than 200 would be retried forever.
		s.writeJSON(w, http.StatusOK, CodeWSAuthFailed, map[string]any{"code": CodeWSAuthFailed, "msg": "invalid app_id or app_secret"})
		return
	}
	s.mu.Lock()
	n := s.next("device")
	device := fmt.Sprintf("d%d", n)
	ticket := fmt.Sprintf("tk%d-%d", s.id, n)
	s.ws.tickets[ticket] = true
	s.mu.Unlock()
	// From the request's host, not s.URL: a handler must not read a field NewServer
	// writes after the listener already serves (a client process can dial that early).
	u := "ws://" + r.Host +
		fmt.Sprintf("/ws?device_id=%s&service_id=%d&ticket=%s", device, wsServiceID, ticket)
	s.writeJSON(w, http.StatusOK, CodeOK, map[string]any{
		"code": 0, "msg": "ok",
		"data": larkws.Endpoint{Url: u, ClientConfig: s.wsConfig()},
	})
}

func (s *Server) wsConfig() *larkws.ClientConfig {
	c := s.WSConfig
	if c.ReconnectCount == 0 {
		c.ReconnectCount = -1
	}
	if c.ReconnectInterval <= 0 {
		c.ReconnectInterval = 1
	}
	if c.ReconnectNonce <= 0 {
		c.ReconnectNonce = 1
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 5
	}
	return &c
}

// wsUpgrade accepts a long connection dialled with a ticket from wsEndpoint, answers pings
// and routes acks to DeliverWS until the connection ends.
func (s *Server) wsUpgrade(w *recorder, r *http.Request) {
	ticket := r.URL.Query().Get("ticket")
	s.mu.Lock()
	valid := s.ws.tickets[ticket] && !s.ws.closed
	delete(s.ws.tickets, ticket)
	s.mu.Unlock()
	if !valid {
		// The SDK reads Handshake-Status 403 as a ClientError and stops.
		w.Header().Set(larkws.HeaderHandshakeStatus, strconv.Itoa(larkws.Forbidden))
		w.Header().Set(larkws.HeaderHandshakeMsg, "invalid ticket")
		s.fail(w, http.StatusForbidden, larkws.Forbidden, "invalid ticket")
		return
	}
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		s.t.Errorf("feishutest: websocket upgrade: %v", err)
		return
	}
	w.status = http.StatusSwitchingProtocols

	s.mu.Lock()
	c := &wsConn{id: s.next("conn"), conn: conn, closed: make(chan struct{})}
	s.ws.conns[c.id] = c
	s.ws.connects++
	s.ws.notifyLocked()
	s.mu.Unlock()

	defer func() {
		c.close()
		s.mu.Lock()
		if s.ws.conns[c.id] == c {
			delete(s.ws.conns, c.id)
			s.ws.notifyLocked()
		}
		s.mu.Unlock()
	}()
	for {
		typ, msg, err := conn.ReadMessage()
		if err != nil {
			return
		}
		if typ != websocket.BinaryMessage {
			continue
		}
		var f larkws.Frame
		if err := f.Unmarshal(msg); err != nil {
			continue
		}
		hs := larkws.Headers(f.Headers)
		switch larkws.FrameType(f.Method) {
		case larkws.FrameTypeControl:
			if hs.GetString(larkws.HeaderType) == string(larkws.MessageTypePing) {
				s.pong(c, f)
			}
		case larkws.FrameTypeData:
			s.ack(hs.GetString(larkws.HeaderMessageID), f.Payload)
		}
	}
}

func (s *Server) pong(c *wsConn, ping larkws.Frame) {
	s.mu.Lock()
	s.ws.pings++
	s.mu.Unlock()
	conf, _ := json.Marshal(s.wsConfig())
	pong := larkws.Frame{
		SeqID: ping.SeqID, LogID: ping.LogID, Service: ping.Service, Method: int32(larkws.FrameTypeControl),
		Headers: []larkws.Header{{Key: larkws.HeaderType, Value: string(larkws.MessageTypePong)}},
		Payload: conf,
	}
	b, err := pong.Marshal()
	if err != nil {
		return
	}
	c.write(b)
}

func (s *Server) ack(messageID string, payload []byte) {
	s.mu.Lock()
	ch, ok := s.ws.pending[messageID]
	delete(s.ws.pending, messageID)
	s.mu.Unlock()
	if !ok {
		return // a late ack for a delivery that gave up
	}
	var resp larkws.Response
	if err := json.Unmarshal(payload, &resp); err != nil {
		resp.StatusCode = -1
		resp.Data = payload
	}
	ch <- Ack{Code: resp.StatusCode, Data: resp.Data}
}

// DeliverWS sends payload as an event data frame to one connected long-connection client
// (the newest, as the platform picks one of an app's connections) and waits for its ack.
func (s *Server) DeliverWS(ctx context.Context, payload []byte) (Ack, error) {
	s.mu.Lock()
	var c *wsConn
	for _, cc := range s.ws.conns {
		if c == nil || cc.id > c.id {
			c = cc
		}
	}
	if c == nil {
		s.mu.Unlock()
		return Ack{}, errors.New("feishutest: deliver over long connection: no client connected")
	}
	s.ws.frames++
	seq := s.ws.frames
	msgID := fmt.Sprintf("wsmsg_%d_%d", s.id, seq)
	ch := make(chan Ack, 1)
	s.ws.pending[msgID] = ch
	s.mu.Unlock()
	giveUp := func() {
		s.mu.Lock()
		delete(s.ws.pending, msgID)
		s.mu.Unlock()
	}

	f := larkws.Frame{
		SeqID: seq, LogID: seq, Service: wsServiceID, Method: int32(larkws.FrameTypeData),
		Headers: []larkws.Header{
			{Key: larkws.HeaderType, Value: string(larkws.MessageTypeEvent)},
			{Key: larkws.HeaderMessageID, Value: msgID},
			{Key: larkws.HeaderSum, Value: "1"},
			{Key: larkws.HeaderSeq, Value: "0"},
			{Key: larkws.HeaderTraceID, Value: fmt.Sprintf("trace_%d_%d", s.id, seq)},
			{Key: larkws.HeaderTimestamp, Value: strconv.FormatInt(s.Now().UnixMilli(), 10)},
		},
		Payload: payload,
	}
	b, err := f.Marshal()
	if err != nil {
		giveUp()
		return Ack{}, fmt.Errorf("feishutest: encode frame: %w", err)
	}
	if err := c.write(b); err != nil {
		giveUp()
		return Ack{}, fmt.Errorf("feishutest: deliver over long connection: %w", err)
	}
	select {
	case a := <-ch:
		if a.Code == http.StatusOK {
			s.applyCallbackAnswer(payload, a.Data)
		}
		return a, nil
	case <-c.closed:
		giveUp()
		return Ack{}, errors.New("feishutest: deliver over long connection: connection closed before the ack")
	case <-ctx.Done():
		giveUp()
		return Ack{}, fmt.Errorf("feishutest: wait for ack of %s: %w", msgID, ctx.Err())
	}
}

// WaitConnected returns once at least one long-connection client is connected.
func (s *Server) WaitConnected(ctx context.Context) error {
	for {
		s.mu.Lock()
		n, changed := len(s.ws.conns), s.ws.changed
		s.mu.Unlock()
		if n > 0 {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("feishutest: wait for a long connection: %w", ctx.Err())
		}
	}
}

// Connected reports how many long-connection clients are connected now.
func (s *Server) Connected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ws.conns)
}

// Connects reports how many long connections were accepted in all.
func (s *Server) Connects() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ws.connects
}

// Pings reports how many pings the clients sent.
func (s *Server) Pings() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ws.pings
}

// DropConnections closes every long connection abruptly, as a network failure would. When it
// returns Connected is 0; a client with auto-reconnect dials again.
func (s *Server) DropConnections() {
	s.mu.Lock()
	conns := s.ws.conns
	s.ws.conns = map[int]*wsConn{}
	s.ws.notifyLocked()
	s.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

func (s *Server) closeWS() {
	s.mu.Lock()
	s.ws.closed = true
	s.mu.Unlock()
	s.DropConnections()
}
