package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// Result is one result line of `go test -bench` output, e.g.
//
//	BenchmarkSteadyState/sessions=1000/store=memory-2   	       1	  2043 ns/op	  13.70 req/1kmsg
type Result struct {
	Line    int    // line number in the input, from 1
	Name    string // without the -GOMAXPROCS suffix
	Iters   int64
	Units   []string           // in the order the line reports them
	Metrics map[string]float64 // by unit
}

// procsSuffix is the -GOMAXPROCS suffix the testing package appends to a benchmark name when
// GOMAXPROCS is not 1. With GOMAXPROCS=1 there is none, and a name whose last part ends in
// -<digits> loses those digits all the same: benchfmt (golang.org/x/perf) does the same.
var procsSuffix = regexp.MustCompile(`-[0-9]+$`)

// Parse reads benchmark output and returns its result lines in input order. Lines that are
// not results (goos:, pkg:, PASS, ok, logs, the name lines that -v prints) are skipped. A line
// that starts like a result (a Benchmark name, then an iteration count) but whose metrics
// are not value-unit pairs of numbers is an error: skipping it would drop a run unseen.
func Parse(r io.Reader) ([]Result, error) {
	var results []Result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for n := 1; sc.Scan(); n++ {
		res, ok, err := parseLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if ok {
			res.Line = n
			results = append(results, res)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading benchmark output: %w", err)
	}
	return results, nil
}

// parseLine returns ok false for a line that is not a result line.
func parseLine(line string) (Result, bool, error) {
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasPrefix(f[0], "Benchmark") {
		return Result{}, false, nil
	}
	iters, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || iters < 0 {
		return Result{}, false, nil // e.g. "BenchmarkX-2  --- FAIL" or a log line
	}
	name := procsSuffix.ReplaceAllString(f[0], "")
	pairs := f[2:]
	if len(pairs) == 0 || len(pairs)%2 != 0 {
		return Result{}, false, fmt.Errorf("%s: metrics are not value-unit pairs: %q", name, strings.Join(pairs, " "))
	}
	res := Result{Name: name, Iters: iters, Metrics: make(map[string]float64, len(pairs)/2)}
	for i := 0; i < len(pairs); i += 2 {
		v, err := strconv.ParseFloat(pairs[i], 64)
		if err != nil {
			return Result{}, false, fmt.Errorf("%s: value %q of %s is not a number", name, pairs[i], pairs[i+1])
		}
		unit := pairs[i+1]
		if _, dup := res.Metrics[unit]; dup {
			return Result{}, false, fmt.Errorf("%s: unit %s appears twice", name, unit)
		}
		res.Units = append(res.Units, unit)
		res.Metrics[unit] = v
	}
	return res, true, nil
}

// param is one key=value part of a benchmark name.
type param struct {
	key, value string
	part       int // index of the part in the name split at "/"
}

// params returns the key=value parts of a name (its parts are separated by "/").
func params(name string) []param {
	var ps []param
	for i, part := range strings.Split(name, "/") {
		if k, v, ok := strings.Cut(part, "="); ok {
			ps = append(ps, param{key: k, value: v, part: i})
		}
	}
	return ps
}

// lookup returns the one parameter named key in the name.
func lookup(name, key string) (param, error) {
	var found []param
	for _, p := range params(name) {
		if p.key == key {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 0:
		return param{}, fmt.Errorf("%s has no %s=<value> in its name", name, key)
	case 1:
		return found[0], nil
	default:
		return param{}, fmt.Errorf("%s has %s= %d times in its name", name, key, len(found))
	}
}

// parseNumber reads an x value: a number, optionally followed by k (thousand), M (million)
// or G (billion), as benchmark names write sizes: 500, 1.5k, 10k, 1M.
func parseNumber(s string) (float64, error) {
	mult := 1.0
	num := s
	switch {
	case strings.HasSuffix(s, "k"), strings.HasSuffix(s, "K"):
		mult, num = 1e3, s[:len(s)-1]
	case strings.HasSuffix(s, "M"):
		mult, num = 1e6, s[:len(s)-1]
	case strings.HasSuffix(s, "G"):
		mult, num = 1e9, s[:len(s)-1]
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%q is not a number (write e.g. 500, 1.5k, 10k, 1M)", s)
	}
	return v * mult, nil
}
