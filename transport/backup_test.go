package transport

import (
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
		remote string
		want   int
	}{
		{"10.1.2.3:5555", http.StatusForbidden},
		{"[2001:db8::1]:5555", http.StatusForbidden},
		{"127.0.0.1:5555", http.StatusNotImplemented}, // let through, to a backend that cannot back up
		{"[::1]:5555", http.StatusNotImplemented},
	} {
		r := httptest.NewRequest(http.MethodGet, PathBackup, nil)
		r.RemoteAddr = tc.remote
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("backup from %s: %d %s, want %d", tc.remote, w.Code, w.Body, tc.want)
		}
		if tc.want == http.StatusForbidden && !strings.Contains(w.Body.String(), "loopback") {
			t.Errorf("refusal does not say why: %s", w.Body)
		}
	}
}
