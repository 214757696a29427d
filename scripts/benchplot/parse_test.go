package main

import (
	"os"
	"strings"
	"testing"
)

func TestParseKeepsResultLinesOfRealOutput(t *testing.T) {
	results := readSample(t)
	// 3 runs of 6 sub-benchmarks, and one other benchmark; goos:, pkg:, the name lines -v
	// prints, logs, --- BENCH:, PASS and ok are not results.
	if len(results) != 19 {
		t.Fatalf("got %d results, want 19", len(results))
	}
	first := results[0]
	if first.Line != 7 || first.Name != "BenchmarkSteadyState/sessions=100/store=memory" || first.Iters != 1 {
		t.Errorf("first result: line %d, name %q, iters %d", first.Line, first.Name, first.Iters)
	}
	wantUnits := []string{"ns/op", "req/1kmsg", "bytes-up/msg", "p99-µs"}
	if strings.Join(first.Units, " ") != strings.Join(wantUnits, " ") {
		t.Errorf("units %q, want %q", first.Units, wantUnits)
	}
	if first.Metrics["req/1kmsg"] != 31.2 || first.Metrics["ns/op"] != 1204312345 {
		t.Errorf("metrics %v", first.Metrics)
	}
	// Only the -GOMAXPROCS suffix goes, not the -20ms of the store's name.
	if got := results[1].Name; got != "BenchmarkSteadyState/sessions=100/store=memory-20ms" {
		t.Errorf("second result named %q", got)
	}
	last := results[len(results)-1]
	if last.Name != "BenchmarkPacketStoreQoS12" || last.Iters != 2345678 || last.Metrics["allocs/op"] != 3 {
		t.Errorf("last result: %+v", last)
	}
}

func TestParseSkipsLinesThatAreNotResults(t *testing.T) {
	for _, line := range []string{
		"goos: linux",
		"PASS",
		"ok  \tgithub.com/s3persist/s3persist\t1.2s",
		"BenchmarkSteadyState",
		"BenchmarkSteadyState/sessions=100-2   \t",
		"--- FAIL: BenchmarkX-2",
		"BenchmarkX-2 \t--- SKIP: BenchmarkX-2",
		"    bench_test.go:12: Benchmark 3 runs",
		"FAIL\tgithub.com/s3persist/s3persist\t0.1s",
	} {
		results, err := Parse(strings.NewReader(line))
		if err != nil || len(results) != 0 {
			t.Errorf("%q: got %v, %v; want no result and no error", line, results, err)
		}
	}
}

func TestParseRejectsAResultLineWithBrokenMetrics(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{"BenchmarkX-2 \t 10 \t 12 ns/op \t 3", "not value-unit pairs"},
		{"BenchmarkX-2 \t 10", "not value-unit pairs"},
		{"BenchmarkX-2 \t 10 \t fast ns/op", `value "fast" of ns/op is not a number`},
		{"BenchmarkX-2 \t 10 \t 1 ns/op \t 2 ns/op", "unit ns/op appears twice"},
	} {
		_, err := Parse(strings.NewReader("goos: linux\n" + tc.line + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "line 2: ") {
			t.Errorf("%q: got %v, want an error on line 2 containing %q", tc.line, err, tc.want)
		}
	}
}

func TestParseNumberReadsSuffixes(t *testing.T) {
	for in, want := range map[string]float64{"500": 500, "1k": 1000, "1.5k": 1500, "10K": 10000, "2M": 2e6, "1G": 1e9, "-3": -3, "0.25": 0.25} {
		if got, err := parseNumber(in); err != nil || got != want {
			t.Errorf("parseNumber(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "k", "memory", "20ms", "1Ki", "NaN", "Inf", "1e400"} {
		if got, err := parseNumber(in); err == nil {
			t.Errorf("parseNumber(%q) = %v, want an error", in, got)
		}
	}
}

func FuzzParseAndGroup(f *testing.F) {
	sample, err := os.ReadFile("testdata/steady.txt")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(sample))
	f.Add("BenchmarkX/n=1-2 1 NaN u\nBenchmarkX/n=1/n=2-2 1 3 u\n")
	f.Add("BenchmarkX/n=k 1 1 u\nBenchmarkX/m=1 1 1 u\n")
	f.Fuzz(func(t *testing.T, in string) {
		results, err := Parse(strings.NewReader(in))
		if err != nil {
			return
		}
		series, _, err := Group(results, Query{X: "n", Unit: "u"})
		if err != nil {
			return
		}
		for _, s := range series {
			for _, p := range s.Points {
				if len(p.Values) == 0 || p.Min > p.Median || p.Median > p.Max {
					t.Fatalf("bad point %+v", p)
				}
			}
		}
	})
}
