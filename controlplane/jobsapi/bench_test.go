package jobsapi_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkRESTSubmit submits small jobs ("true") through POST /api/jobs/
// from 16 clients: b.N submissions; it reports submissions acknowledged
// per second and, once all have ended, jobs run to completion per second.
//
//	go test ./controlplane/jobsapi/ -run '^$' -bench RESTSubmit -benchtime 500x
func BenchmarkRESTSubmit(b *testing.B) {
	e := start(b)
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if code, body := e.do("POST", "/api/jobs/", []byte(`{"entrypoint": "true"}`), false, nil); code != 200 {
					b.Errorf("submit: %d %s", code, body)
					return
				}
			}
		}()
	}
	wg.Wait()
	submitted := time.Since(start)
	b.ReportMetric(float64(b.N)/submitted.Seconds(), "submits/s")
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var jobs []details
		e.do("GET", "/api/jobs/", nil, false, &jobs)
		ended := 0
		for _, j := range jobs {
			if j.Status == "SUCCEEDED" {
				ended++
			} else if j.Status == "FAILED" {
				b.Fatalf("a job failed: %+v", j)
			}
		}
		if ended == b.N {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d jobs ended", ended, b.N)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "completed/s")
}
