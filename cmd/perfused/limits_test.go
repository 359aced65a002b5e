package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// A flood of refusals of one kind is logged once; another kind still is.
func TestRefusalLogOncePerKind(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, nil))
	var r refusalLog
	for range 1000 {
		r.log(l, "pending 65534", "perfused: connection refused", "uid", 65534)
	}
	r.log(l, "refused 1000", "perfused: mount refused", "uid", 1000)
	if n := strings.Count(buf.String(), "\n"); n != 2 {
		t.Errorf("%d lines logged for 1001 refusals of 2 kinds, want 2:\n%s", n, buf.String())
	}
}

// Limits count per user and in total; root is counted, never refused.
func TestCounterLimits(t *testing.T) {
	var c counter
	if c.take(1, 3, 2) != "" || c.take(1, 3, 2) != "" {
		t.Fatal("first two of uid 1 refused")
	}
	if why := c.take(1, 3, 2); !strings.Contains(why, "for uid 1") {
		t.Errorf("third of uid 1: %q, want the per-user limit", why)
	}
	if c.take(2, 3, 2) != "" {
		t.Error("uid 2 refused below the total")
	}
	if why := c.take(3, 3, 2); !strings.Contains(why, "in total") {
		t.Errorf("uid 3 past the total: %q", why)
	}
	if c.take(0, 3, 2) != "" {
		t.Error("root refused")
	}
	c.give(1)
	if c.take(1, 3, 2) == "" {
		t.Error("uid 1 taken on with 3 held (root's included), total 3")
	}
	c.give(0)
	if c.take(1, 3, 2) != "" {
		t.Error("uid 1 refused once back under both limits")
	}
}
