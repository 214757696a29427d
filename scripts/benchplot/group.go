package main

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
)

// Query says which results to plot and how.
type Query struct {
	Bench  *regexp.Regexp // selects results by name (without the -GOMAXPROCS suffix); nil: all
	X      string         // the name parameter on the x axis, e.g. "sessions"
	Unit   string         // the metric on the y axis, e.g. "req/1kmsg"
	Series string         // optional name parameter whose values label the lines, e.g. "store"
}

// Series is one line of the plot: the results whose names are equal once the x parameter
// is set aside.
type Series struct {
	Label  string
	Name   string // the name without its x part, e.g. BenchmarkSteadyState/store=memory
	Points []Point
}

// Point is the value of one x in one series, over every run of it (-count).
type Point struct {
	X      float64
	XText  string    // the x value as the name writes it, e.g. "10k"
	Values []float64 // one per run, ascending
	Median float64
	Min    float64
	Max    float64
}

// Group selects the results of q and groups them into series of points, each series in the
// order its first result appears and its points by ascending x. Selected results that do not
// report q.Unit while others do are skipped and named in the warnings; it is an error when
// none reports it.
func Group(results []Result, q Query) (series []Series, warnings []string, err error) {
	if len(results) == 0 {
		return nil, nil, fmt.Errorf("no benchmark result lines in the input (lines like \"BenchmarkName-2  1000  123 ns/op\")")
	}
	var selected []Result
	for _, r := range results {
		if q.Bench == nil || q.Bench.MatchString(r.Name) {
			selected = append(selected, r)
		}
	}
	if len(selected) == 0 {
		return nil, nil, fmt.Errorf("no benchmark matches -bench %q among the %d results read (first: %s)", q.Bench, len(results), results[0].Name)
	}

	var withUnit []Result
	var missing []string
	for _, r := range selected {
		if _, ok := r.Metrics[q.Unit]; ok {
			withUnit = append(withUnit, r)
		} else if !slices.Contains(missing, r.Name) {
			missing = append(missing, r.Name)
		}
	}
	if len(withUnit) == 0 {
		return nil, nil, fmt.Errorf("unknown unit %q: the selected benchmarks report %s", q.Unit, strings.Join(unitsOf(selected), ", "))
	}
	if len(missing) > 0 {
		warnings = append(warnings, fmt.Sprintf("skipped %d selected benchmark(s) that do not report %s: %s",
			len(missing), q.Unit, abbreviate(missing, 3)))
	}

	byName := map[string]*Series{}
	var order []*Series
	for _, r := range withUnit {
		xp, err := lookup(r.Name, q.X)
		if err != nil {
			return nil, nil, fmt.Errorf("line %d: -x %s: %w", r.Line, q.X, err)
		}
		x, err := parseNumber(xp.value)
		if err != nil {
			return nil, nil, fmt.Errorf("line %d: %s: the x value of %s= is not numeric: %w", r.Line, r.Name, q.X, err)
		}
		y := r.Metrics[q.Unit]
		if math.IsNaN(y) || math.IsInf(y, 0) {
			return nil, nil, fmt.Errorf("line %d: %s: %s is %v, which cannot be plotted", r.Line, r.Name, q.Unit, y)
		}
		parts := strings.Split(r.Name, "/")
		rest := strings.Join(slices.Delete(parts, xp.part, xp.part+1), "/")
		s := byName[rest]
		if s == nil {
			s = &Series{Name: rest}
			if q.Series != "" {
				sp, err := lookup(r.Name, q.Series)
				if err != nil {
					return nil, nil, fmt.Errorf("line %d: -series %s: %w", r.Line, q.Series, err)
				}
				s.Label = sp.value
			}
			byName[rest] = s
			order = append(order, s)
		}
		i, found := slices.BinarySearchFunc(s.Points, x, func(p Point, x float64) int {
			switch {
			case p.X < x:
				return -1
			case p.X > x:
				return 1
			}
			return 0
		})
		if !found {
			s.Points = slices.Insert(s.Points, i, Point{X: x, XText: xp.value})
		}
		s.Points[i].Values = append(s.Points[i].Values, y)
	}

	if err := label(order, q); err != nil {
		return nil, nil, err
	}
	for _, s := range order {
		for i := range s.Points {
			s.Points[i].summarize()
		}
		series = append(series, *s)
	}
	return series, warnings, nil
}

// label checks that -series names each series once, or, without -series, labels each series
// by the parts of its name that differ from the others'.
func label(order []*Series, q Query) error {
	if q.Series != "" {
		seen := map[string]string{}
		for _, s := range order {
			if other, dup := seen[s.Label]; dup {
				return fmt.Errorf("%s=%s labels two different benchmarks once %s is set aside: %s and %s; select one with -bench",
					q.Series, s.Label, q.X, other, s.Name)
			}
			seen[s.Label] = s.Name
		}
		return nil
	}
	if len(order) == 1 {
		order[0].Label = order[0].Name
		return nil
	}
	// Drop the leading parts every name shares (the benchmark's own name, usually).
	split := make([][]string, len(order))
	for i, s := range order {
		split[i] = strings.Split(s.Name, "/")
	}
	common := 0
	for ; ; common++ {
		same := true
		for _, p := range split {
			if common >= len(p)-1 || p[common] != split[0][common] {
				same = false
				break
			}
		}
		if !same {
			break
		}
	}
	for i, s := range order {
		s.Label = strings.Join(split[i][common:], "/")
	}
	return nil
}

func (p *Point) summarize() {
	slices.Sort(p.Values)
	n := len(p.Values)
	p.Min, p.Max = p.Values[0], p.Values[n-1]
	if n%2 == 1 {
		p.Median = p.Values[n/2]
	} else {
		p.Median = (p.Values[n/2-1] + p.Values[n/2]) / 2
	}
}

// runs returns the fewest and the most runs of any point.
func runs(series []Series) (lo, hi int) {
	lo = math.MaxInt
	for _, s := range series {
		for _, p := range s.Points {
			lo = min(lo, len(p.Values))
			hi = max(hi, len(p.Values))
		}
	}
	return lo, hi
}

func unitsOf(results []Result) []string {
	var units []string
	for _, r := range results {
		for _, u := range r.Units {
			if !slices.Contains(units, u) {
				units = append(units, u)
			}
		}
	}
	return units
}

func abbreviate(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:n], ", "), len(names)-n)
}
