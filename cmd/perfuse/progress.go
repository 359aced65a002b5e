package main

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// progress draws cp's progress bar on a terminal: bytes, files, rate and
// time left. A nil *progress draws nothing.
type progress struct {
	w            io.Writer
	start        time.Time
	totalBytes   int64
	totalFiles   int64
	bytes, files atomic.Int64
	stop         chan struct{}
	wg           sync.WaitGroup
}

// progressEvery is how often the bar is redrawn.
const progressEvery = 200 * time.Millisecond

// newProgress returns a progress bar on w if w is a terminal, else nil.
func newProgress(w io.Writer) *progress {
	if !isTerminal(w) {
		return nil
	}
	return &progress{w: w}
}

// add counts a file of size bytes to copy, before the copy starts.
func (p *progress) add(size int64) {
	p.totalBytes += size
	p.totalFiles++
}

// total starts drawing, once the sizes are counted (err, from counting
// them, only makes the totals unknown: the copy reports it).
func (p *progress) total(err error) {
	if err != nil {
		p.totalBytes, p.totalFiles = 0, 0
	}
	p.start = time.Now()
	p.stop = make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.draw()
			}
		}
	}()
}

func (p *progress) done() {
	close(p.stop)
	p.wg.Wait()
	p.draw()
	fmt.Fprintln(p.w)
}

func (p *progress) file() {
	if p != nil {
		p.files.Add(1)
	}
}

// reader counts what is read from r.
func (p *progress) reader(r io.Reader) io.Reader {
	if p == nil {
		return r
	}
	return &counted{r: r, p: p}
}

type counted struct {
	r io.Reader
	p *progress
}

func (c *counted) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.bytes.Add(int64(n))
	return n, err
}

func (p *progress) draw() {
	b, f := p.bytes.Load(), p.files.Load()
	el := time.Since(p.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(b) / el
	}
	line := fmt.Sprintf("%s / %s  %d/%d files  %s/s", size(b), size(p.totalBytes), f, p.totalFiles, size(int64(rate)))
	if rate > 0 && p.totalBytes >= b {
		left := time.Duration(float64(p.totalBytes-b) / rate * float64(time.Second))
		line += "  ETA " + left.Round(time.Second).String()
	}
	fmt.Fprintf(p.w, "\r\x1b[K%s", line)
}

// size is n bytes for a person: "12.3 MiB".
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
