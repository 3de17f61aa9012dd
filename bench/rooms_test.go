package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Every client of rooms, in one process or spread over two children,
// receives exactly the messages it sent, each once and in order, and none
// of another room's; the server took each as a message on its own room.
func TestRoomsEveryClientGetsItsOwnMessagesOnly(t *testing.T) {
	for _, tc := range []struct {
		name         string
		connsPerProc int
		procs        int
	}{
		{"one process", 0, 1},
		{"two child processes", 25, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, srv := startFanout(t)
			res, err := Run(context.Background(), Config{
				Scenario: ScenarioRooms, URL: url, Conns: 50, ConnsPerProc: tc.connsPerProc,
				SourceIPs:     []net.IP{net.IPv4(127, 0, 0, 2), net.IPv4(127, 0, 0, 3)},
				RatePerClient: 100, Messages: 10, Duration: time.Minute, Drain: 5 * time.Second,
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			f, rm := res.Fanout, res.Rooms
			if res.Procs != tc.procs || res.Connect.Connected != 50 || rm == nil || rm.Rooms != 50 {
				t.Fatalf("procs %d connected %d rooms %+v; want %d, 50, 50", res.Procs, res.Connect.Connected, rm, tc.procs)
			}
			if f.Sent != 500 || f.Expected != 500 || f.Received != 500 || f.Lost != 0 || f.Duplicates != 0 || f.Reordered != 0 || f.Foreign != 0 {
				t.Fatalf("sent %d expected %d received %d lost %d dups %d reordered %d foreign %d; want 500 each way and no faults",
					f.Sent, f.Expected, f.Received, f.Lost, f.Duplicates, f.Reordered, f.Foreign)
			}
			if rm.Misrouted != 0 || rm.ClientsShort != 0 || rm.WriteErrors != 0 || f.Latency.Count != 500 {
				t.Fatalf("from other rooms %d, clients short %d, write errors %d, latency samples %d; want 0, 0, 0, 500",
					rm.Misrouted, rm.ClientsShort, rm.WriteErrors, f.Latency.Count)
			}
			if st, want := srv.Stats(), 500+res.WarmupSent; st.MessagesIn != want || st.Published != want {
				t.Fatalf("server read %d messages and published %d, want %d (500 and the warm-ups)", st.MessagesIn, st.Published, want)
			}
			// The rooms are room-0 … room-49, whichever process held them
			// (the history keeps each channel that had a message).
			var names []string
			for _, c := range srv.Channels() {
				names = append(names, c.Name)
			}
			var want []string
			for i := 0; i < 50; i++ {
				want = append(want, fmt.Sprintf("room-%d", i))
			}
			slices.Sort(names)
			slices.Sort(want)
			if !slices.Equal(names, want) {
				t.Fatalf("server channels %q, want room-0 … room-49", names)
			}
		})
	}
}

// cheatingRooms routes each client's messages to the clients on its
// channel (?channel=), but misbehaves towards room-0 on purpose: it drops
// room-0's message 3, sends its message 5 twice, and sends its message 7
// to room-1 as well. The bench must report exactly that.
type cheatingRooms struct {
	mu    sync.Mutex
	rooms map[string][]*cheatClient
}

func (h *cheatingRooms) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	room := r.URL.Query().Get("channel")
	up := websocket.Upgrader{}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &cheatClient{conn: conn}
	h.mu.Lock()
	h.rooms[room] = append(h.rooms[room], c)
	h.mu.Unlock()
	for {
		typ, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		h.publish(room, msg{typ, data})
	}
}

func (h *cheatingRooms) publish(room string, m msg) {
	h.mu.Lock()
	defer h.mu.Unlock()
	to := h.rooms[room]
	if _, seq, _, err := parseRoomPayload(m.data); err == nil && room == "room-0" {
		switch seq {
		case 3:
			to = nil
		case 5:
			to = append(slices.Clone(to), to...)
		case 7:
			to = append(slices.Clone(to), h.rooms["room-1"]...)
		}
	}
	for _, c := range to {
		c.send(m)
	}
}

func TestRoomsReportExactlyWhatTheServerDid(t *testing.T) {
	url := serve(t, &cheatingRooms{rooms: map[string][]*cheatClient{}})
	res, err := Run(context.Background(), Config{
		Scenario: ScenarioRooms, URL: url, Conns: 5,
		RatePerClient: 100, Messages: 10, Duration: time.Minute, Drain: 2 * time.Second,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, rm := res.Fanout, res.Rooms
	if f.Sent != 50 || f.Received != 49 || f.Lost != 1 || f.Duplicates != 1 || f.Reordered != 0 {
		t.Fatalf("sent %d received %d lost %d dups %d reordered %d; want 50, 49, 1, 1, 0", f.Sent, f.Received, f.Lost, f.Duplicates, f.Reordered)
	}
	if rm.Misrouted != 1 || rm.ClientsShort != 1 || f.Latency.Count != 49 {
		t.Fatalf("from other rooms %d, clients short %d, latency samples %d; want 1, 1, 49", rm.Misrouted, rm.ClientsShort, f.Latency.Count)
	}
}
