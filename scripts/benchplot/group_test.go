package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func readSample(t *testing.T) []Result {
	t.Helper()
	f, err := os.Open("testdata/steady.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	results, err := Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	return results
}

func TestGroupRepeatedRunsIntoMedianMinMaxPerSeries(t *testing.T) {
	series, warnings, err := Group(readSample(t), Query{
		Bench: regexp.MustCompile("SteadyState"), X: "sessions", Unit: "req/1kmsg", Series: "store",
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings: %q", warnings)
	}
	if len(series) != 2 || series[0].Label != "memory" || series[1].Label != "memory-20ms" {
		t.Fatalf("series %+v, want memory then memory-20ms", series)
	}
	mem := series[0]
	if mem.Name != "BenchmarkSteadyState/store=memory" {
		t.Errorf("name %q", mem.Name)
	}
	want := []Point{
		{X: 100, XText: "100", Values: []float64{29.8, 31.2, 33.0}, Median: 31.2, Min: 29.8, Max: 33.0},
		{X: 1000, XText: "1k", Values: []float64{13.6, 13.7, 13.8}, Median: 13.7, Min: 13.6, Max: 13.8},
		{X: 10000, XText: "10k", Values: []float64{15.1, 16.2, 17.9}, Median: 16.2, Min: 15.1, Max: 17.9},
	}
	if len(mem.Points) != len(want) {
		t.Fatalf("points %+v", mem.Points)
	}
	for i, p := range mem.Points {
		w := want[i]
		if p.X != w.X || p.XText != w.XText || !slices.Equal(p.Values, w.Values) || p.Median != w.Median || p.Min != w.Min || p.Max != w.Max {
			t.Errorf("point %d: got %+v, want %+v", i, p, w)
		}
	}
	if lo, hi := runs(series); lo != 3 || hi != 3 {
		t.Errorf("runs %d to %d, want 3", lo, hi)
	}
}

func TestMedianOfAnEvenNumberOfRunsIsTheMeanOfTheMiddleTwo(t *testing.T) {
	p := Point{Values: []float64{4, 1, 10, 2}}
	p.summarize()
	if p.Median != 3 || p.Min != 1 || p.Max != 10 || !slices.Equal(p.Values, []float64{1, 2, 4, 10}) {
		t.Errorf("got %+v", p)
	}
}

func TestWithoutSeriesTheLabelsAreThePartsOfTheNamesThatDiffer(t *testing.T) {
	in := `BenchmarkLoad/kind=a/sessions=10/mode=sync-2 1 5 s
BenchmarkLoad/kind=a/sessions=20/mode=sync-2 1 6 s
BenchmarkLoad/kind=a/sessions=10/mode=async-2 1 3 s
BenchmarkLoad/kind=a/sessions=20/mode=async-2 1 4 s
`
	results, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	series, _, err := Group(results, Query{X: "sessions", Unit: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if len(series) != 2 || series[0].Label != "mode=sync" || series[1].Label != "mode=async" {
		t.Errorf("series %+v", series)
	}
	// One series is labelled by its whole name.
	series, _, err = Group(results, Query{Bench: regexp.MustCompile("sync$"), X: "sessions", Unit: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if len(series) != 2 {
		t.Fatalf("-bench sync$ gave %d series, want 2 (sync and async both end in sync)", len(series))
	}
	series, _, err = Group(results, Query{Bench: regexp.MustCompile("=sync$"), X: "sessions", Unit: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if len(series) != 1 || series[0].Label != "BenchmarkLoad/kind=a/mode=sync" || len(series[0].Points) != 2 {
		t.Errorf("series %+v", series)
	}
}

func TestBenchmarksWithoutTheUnitAreSkippedWithAWarning(t *testing.T) {
	in := `BenchmarkCompare/sessions=10/mem-2 1 100 ns/op
BenchmarkCompare/sessions=10/s3persist-2 1 200 ns/op 7 req/1000calls
BenchmarkCompare/sessions=20/s3persist-2 1 300 ns/op 9 req/1000calls
`
	results, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	series, warnings, err := Group(results, Query{X: "sessions", Unit: "req/1000calls"})
	if err != nil {
		t.Fatal(err)
	}
	if len(series) != 1 || len(series[0].Points) != 2 {
		t.Errorf("series %+v", series)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "BenchmarkCompare/sessions=10/mem") {
		t.Errorf("warnings %q", warnings)
	}
}

func TestGroupErrorsNameTheProblem(t *testing.T) {
	sample := readSample(t)
	steady := regexp.MustCompile("SteadyState")
	parse := func(in string) []Result {
		r, err := Parse(strings.NewReader(in))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, tc := range []struct {
		name    string
		results []Result
		q       Query
		want    string
	}{
		{"an input without results", parse("goos: linux\nPASS\n"), Query{X: "n", Unit: "ns/op"},
			"no benchmark result lines in the input"},
		{"a -bench that matches nothing", sample, Query{Bench: regexp.MustCompile("Nope"), X: "sessions", Unit: "ns/op"},
			`no benchmark matches -bench "Nope" among the 19 results read`},
		{"a unit no line reports", sample, Query{Bench: steady, X: "sessions", Unit: "req/op"},
			`unknown unit "req/op": the selected benchmarks report ns/op, req/1kmsg, bytes-up/msg, p99-µs`},
		{"an x parameter a name lacks", sample, Query{X: "sessions", Unit: "ns/op"},
			"line 28: -x sessions: BenchmarkPacketStoreQoS12 has no sessions=<value> in its name"},
		{"a non-numeric x value", sample, Query{Bench: steady, X: "store", Unit: "ns/op"},
			`line 7: BenchmarkSteadyState/sessions=100/store=memory: the x value of store= is not numeric: "memory" is not a number`},
		{"an x parameter twice in a name", parse("BenchmarkX/n=1/n=2-2 1 3 ns/op\n"), Query{X: "n", Unit: "ns/op"},
			"BenchmarkX/n=1/n=2 has n= 2 times in its name"},
		{"a series parameter a name lacks", sample, Query{Bench: steady, X: "sessions", Unit: "ns/op", Series: "delay"},
			"line 7: -series delay: BenchmarkSteadyState/sessions=100/store=memory has no delay=<value> in its name"},
		{"a series label shared by two benchmarks", parse("BenchmarkA/n=1/s=x-2 1 1 u\nBenchmarkB/n=1/s=x-2 1 2 u\n"), Query{X: "n", Unit: "u", Series: "s"},
			"s=x labels two different benchmarks once n is set aside: BenchmarkA/s=x and BenchmarkB/s=x"},
		{"a value that is not finite", parse("BenchmarkX/n=1-2 1 NaN u\n"), Query{X: "n", Unit: "u"},
			"line 1: BenchmarkX/n=1: u is NaN, which cannot be plotted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Group(tc.results, tc.q)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
