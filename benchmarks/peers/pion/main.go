// A minimal 1:1 SFU on Pion WebRTC v3 (Debian's golang-github-pion-webrtc.v3-dev):
// a benchmarks.compare target (benchmarks/peers/pion_client.py builds and drives it).
//
// One PeerConnection per peer. A publisher offers (sendonly video); its track is
// forwarded, packet by packet, to a TrackLocalStaticRTP that every subscriber of
// that publisher gets (TrackLocalStaticRTP rewrites SSRC and payload type per
// subscriber, as Pion's own broadcast example and LiveKit do). The API is the
// default one (default codecs and interceptors: NACK, RTCP reports). Signalling is
// plain HTTP on loopback, non-trickle (the answer carries every candidate):
//
//	POST /publish               body: SDP offer -> {"id": "p1", "answer": "..."}
//	POST /subscribe?pub=p1      body: SDP offer -> {"id": "s1", "answer": "..."}
//	GET  /stats                 -> {"forwarded": packets written to subscriber tracks, ...}
//
// ICE gathers only host candidates on -ip (loopback included when -ip is a
// loopback address), UDP over IPv4. The process prints "listening PORT" once its
// HTTP port is open, and exits when its stdin closes (it dies with its driver).
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"

	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v3"
)

type server struct {
	api        *webrtc.API
	mu         sync.Mutex
	next       int
	tracks     map[string]*webrtc.TrackLocalStaticRTP
	peers      map[string]*webrtc.PeerConnection
	forwarded  atomic.Uint64
	received   atomic.Uint64
	writeFails atomic.Uint64
}

func newAPI(ip string) (*webrtc.API, error) {
	media := &webrtc.MediaEngine{}
	if err := media.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	registry := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(media, registry); err != nil {
		return nil, err
	}
	want := net.ParseIP(ip)
	if want == nil {
		return nil, fmt.Errorf("-ip %q is not an IP address", ip)
	}
	settings := webrtc.SettingEngine{}
	settings.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	settings.SetIncludeLoopbackCandidate(want.IsLoopback())
	settings.SetIPFilter(func(candidate net.IP) bool { return candidate.Equal(want) })
	settings.SetICEMulticastDNSMode(0) // ice.MulticastDNSModeDisabled
	return webrtc.NewAPI(
		webrtc.WithMediaEngine(media),
		webrtc.WithInterceptorRegistry(registry),
		webrtc.WithSettingEngine(settings),
	), nil
}

// answer sets the offer, answers it and waits for ICE gathering (non-trickle).
func answer(pc *webrtc.PeerConnection, offer string) (string, error) {
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{
		Type: webrtc.SDPTypeOffer, SDP: offer,
	}); err != nil {
		return "", err
	}
	reply, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(reply); err != nil {
		return "", err
	}
	<-gathered
	return pc.LocalDescription().SDP, nil
}

func (s *server) add(prefix string, pc *webrtc.PeerConnection) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	id := fmt.Sprintf("%s%d", prefix, s.next)
	s.peers[id] = pc
	return id
}

func (s *server) publish(offer string) (string, string, error) {
	pc, err := s.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", "", err
	}
	id := s.add("p", pc)
	local, err := webrtc.NewTrackLocalStaticRTP(
		webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000},
		"video", "pion-"+id,
	)
	if err != nil {
		return "", "", err
	}
	s.mu.Lock()
	s.tracks[id] = local
	s.mu.Unlock()
	pc.OnTrack(func(remote *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		buf := make([]byte, 1500)
		for {
			n, _, err := remote.Read(buf)
			if err != nil {
				return
			}
			s.received.Add(1)
			if _, err := local.Write(buf[:n]); err != nil && !errors.Is(err, io.ErrClosedPipe) {
				s.writeFails.Add(1)
				continue
			}
			s.forwarded.Add(1)
		}
	})
	sdp, err := answer(pc, offer)
	return id, sdp, err
}

func (s *server) subscribe(pub, offer string) (string, string, error) {
	s.mu.Lock()
	local := s.tracks[pub]
	s.mu.Unlock()
	if local == nil {
		return "", "", fmt.Errorf("no publisher %q", pub)
	}
	pc, err := s.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", "", err
	}
	id := s.add("s", pc)
	sender, err := pc.AddTrack(local)
	if err != nil {
		return "", "", err
	}
	go func() { // read the subscriber's RTCP, so the interceptors see it (NACKs...)
		buf := make([]byte, 1500)
		for {
			if _, _, err := sender.Read(buf); err != nil {
				return
			}
		}
	}()
	sdp, err := answer(pc, offer)
	return id, sdp, err
}

func reply(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func (s *server) handle(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/stats" {
		reply(w, http.StatusOK, map[string]uint64{
			"forwarded":   s.forwarded.Load(),
			"received":    s.received.Load(),
			"write_fails": s.writeFails.Load(),
		})
		return
	}
	if r.Method != http.MethodPost {
		reply(w, http.StatusMethodNotAllowed, map[string]string{"error": "POST an SDP offer"})
		return
	}
	offer, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		reply(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	var id, sdp string
	switch r.URL.Path {
	case "/publish":
		id, sdp, err = s.publish(string(offer))
	case "/subscribe":
		id, sdp, err = s.subscribe(r.URL.Query().Get("pub"), string(offer))
	default:
		reply(w, http.StatusNotFound, map[string]string{"error": "no such endpoint"})
		return
	}
	if err != nil {
		reply(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	reply(w, http.StatusOK, map[string]string{"id": id, "answer": sdp})
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "HTTP signalling address (loopback)")
	ip := flag.String("ip", "127.0.0.1", "the one address ICE gathers host candidates on")
	flag.Parse()
	api, err := newAPI(*ip)
	if err != nil {
		log.Fatal(err)
	}
	s := &server{
		api:    api,
		tracks: map[string]*webrtc.TrackLocalStaticRTP{},
		peers:  map[string]*webrtc.PeerConnection{},
	}
	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	go func() { // the driver holds our stdin: when it goes, so do we
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	fmt.Printf("listening %d\n", listener.Addr().(*net.TCPAddr).Port)
	os.Stdout.Sync() //nolint:errcheck
	log.Fatal(http.Serve(listener, http.HandlerFunc(s.handle)))
}
