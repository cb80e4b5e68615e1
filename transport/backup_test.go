package transport

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A backup holds every password hash: over plaintext only a caller on the
// node's own machine may take one.
func TestBackupPlaintextOnlyFromLoopback(t *testing.T) {
	s := NewServer(nil, nil)
	for _, tc := range []struct {
		remote, local string
		want          int
	}{
		{"10.1.2.3:5555", "10.9.9.9:8080", http.StatusForbidden},
		{"[2001:db8::1]:5555", "[2001:db8::2]:8080", http.StatusForbidden},
		{"127.0.0.1:5555", "127.0.0.1:8080", http.StatusNotImplemented}, // let through, to a backend that cannot back up
		{"[::1]:5555", "[::1]:8080", http.StatusNotImplemented},
		{"192.0.2.2:5555", "192.0.2.2:8080", http.StatusNotImplemented}, // the host calling its own address
	} {
		r := httptest.NewRequest(http.MethodGet, PathBackup, nil)
		r.RemoteAddr = tc.remote
		local, err := net.ResolveTCPAddr("tcp", tc.local)
		if err != nil {
			t.Fatal(err)
		}
		r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, net.Addr(local)))
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("backup from %s: %d %s, want %d", tc.remote, w.Code, w.Body, tc.want)
		}
		if tc.want == http.StatusForbidden && !strings.Contains(w.Body.String(), "own machine") {
			t.Errorf("refusal does not say why: %s", w.Body)
		}
	}
}
