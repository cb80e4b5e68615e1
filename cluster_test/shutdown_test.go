package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hats-trading/hats/transport"
)

// Test_GracefulStopAnswersUnavailable: writes in flight at a node that is
// being stopped gracefully (SIGTERM) either complete or fail with an
// answer a client can act on (retry elsewhere, or resolve by its key),
// never 500 internal: a command the closing node did not take is 503
// unavailable. The state stays the same on every node.
func Test_GracefulStopAnswersUnavailable(t *testing.T) {
	c := NewCluster(t, 3, nil)
	Trader(t, c.Client(), "closer")
	f := c.Followers()[0]
	var mu sync.Mutex
	codes := map[string]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		cl, err := transport.NewClient(transport.ClientConfig{Nodes: c.Addrs(f), MaxAttempts: 1, Deadline: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Login(context.Background(), "closer", "password-closer"); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5_000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_, err := cl.Deposit(context.Background(), "1.00", fmt.Sprintf("w%d-%d", w, i))
				code := "ok"
				if err != nil {
					if code = transport.ErrorCode(err); code == "" {
						code = "unreachable"
					}
				}
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}
		}()
	}
	Poll(t, 10*time.Second, "deposits flowing through the follower", func() error {
		mu.Lock()
		defer mu.Unlock()
		if codes["ok"] < 200 {
			return fmt.Errorf("%d so far", codes["ok"])
		}
		return nil
	})
	// As hats node stops on SIGTERM: the node closes (handing leadership
	// over if it has it) while its API still answers, then the API stops.
	if err := f.Node.Close(); err != nil {
		t.Fatal(err)
	}
	Poll(t, 10*time.Second, "the writers see the node closed", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(codes) < 2 { // "ok" and at least one kind of failure
			return fmt.Errorf("codes so far: %v", codes)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	c.Stop(f)
	if codes[transport.CodeInternal] > 0 {
		t.Fatalf("writes at a node being stopped answered 500 internal: %v", codes)
	}
	t.Logf("answers: %v", codes)
	c.Restart(f)
	c.EnsureSame()
}
