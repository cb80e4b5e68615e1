package transport

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// PathBackup is where a node serves a backup of its state.
const PathBackup = "/v1/cluster/backup"

// Backup is one node's state file as of one applied index, for GET
// /v1/cluster/backup.
type Backup struct {
	Node  string
	Index uint64 // the applied index the state is at
	Size  int64  // -1 when not known ahead
	Body  io.ReadCloser
}

// BackupSource is a Backend that can take backups (a node is one).
type BackupSource interface {
	Backup(ctx context.Context) (*Backup, error)
}

// Headers of a backup response.
const (
	HeaderBackupNode  = "Hats-Backup-Node"
	HeaderBackupIndex = "Hats-Backup-Index"
)

// backup streams the node's state file. It holds every trader's password
// hash, so over plaintext only a caller on this machine may take one; over
// TLS clientCert already asked for an operator's certificate.
func (s *Server) backup(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil && !sameHost(r) {
		writeError(w, &APIError{Status: 403, Code: CodeForbidden, Message: "backup: over plaintext only from this node's own machine; serve TLS to take backups remotely"})
		return
	}
	src, ok := s.b.(BackupSource)
	if !ok {
		writeError(w, &APIError{Status: 501, Code: CodeInternal, Message: "backup: not supported by this node"})
		return
	}
	b, err := src.Backup(r.Context())
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	defer b.Body.Close()
	// A large state outlives the server's write timeout; the client's own
	// deadline (or its going away) bounds the copy instead.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	if b.Size >= 0 {
		h.Set("Content-Length", strconv.FormatInt(b.Size, 10))
	}
	h.Set(HeaderBackupNode, b.Node)
	h.Set(HeaderBackupIndex, strconv.FormatUint(b.Index, 10))
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, b.Body); err != nil {
		s.log.Warn("backup cut short", "err", err)
		// Cut the connection instead of ending the chunked body cleanly:
		// the client must see a broken backup as broken.
		panic(http.ErrAbortHandler)
	}
}

// sameHost reports whether a request comes from this machine: from a
// loopback address, or from the very address it reached (a host calling
// its own interface address; no other host can complete a TCP handshake
// with that source address). A reverse proxy on the same machine makes
// every caller look local: do not put one in front of a plaintext node.
func sameHost(r *http.Request) bool {
	remote := hostIP(r.RemoteAddr)
	if remote == nil {
		return false
	}
	if remote.IsLoopback() {
		return true
	}
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	return ok && remote.Equal(hostIP(local.String()))
}

func hostIP(addr string) net.IP {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	return net.ParseIP(host)
}

// BackupInfo describes a backup Client.Backup wrote.
type BackupInfo struct {
	Node  string
	Index uint64
	Bytes int64
}

// Backup downloads the state of the node at addr into w, in one attempt
// (a retry could not take back what was written). The context bounds it;
// no request timeout applies, since a large state takes a while.
func (c *Client) Backup(ctx context.Context, addr string, w io.Writer) (BackupInfo, error) {
	u, err := c.normalize(addr)
	if err != nil {
		return BackupInfo{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+PathBackup, nil)
	if err != nil {
		return BackupInfo{}, err
	}
	hc := &http.Client{Transport: c.hc.Transport} // no overall timeout
	resp, err := hc.Do(req)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("%w: backup from %s: %v", ErrUnavailable, u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
		return BackupInfo{}, decodeAPIError(resp.StatusCode, data)
	}
	info := BackupInfo{Node: resp.Header.Get(HeaderBackupNode)}
	info.Index, _ = strconv.ParseUint(resp.Header.Get(HeaderBackupIndex), 10, 64)
	n, err := io.Copy(w, resp.Body)
	info.Bytes = n
	if err != nil {
		return info, fmt.Errorf("%w: backup from %s cut short after %d bytes: %v", ErrUnavailable, u, n, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return info, fmt.Errorf("%w: backup from %s: %d bytes of %d", ErrUnavailable, u, n, resp.ContentLength)
	}
	return info, nil
}
