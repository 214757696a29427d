// Command benchplot turns `go test -bench` output into a PNG line plot, so that the figures
// of BENCHMARKS.md come from committed commands.
//
// It reads the standard text output of go test (from -in, or stdin), keeps the result lines
// whose name matches -bench, and plots the metric -y (a unit such as ns/op or req/1kmsg)
// against the name parameter -x (sessions in BenchmarkX/sessions=1000/store=memory-2). Each
// series is the results whose names differ only in -x; -series names the parameter that
// labels them. With repeated runs (-count), a line goes through the medians and error bars
// span the lowest to the highest run; the legend says so.
//
// Usage, from the repository's root, on the sample output of the tests:
//
//	go run -C scripts/benchplot . -in testdata/steady.txt -out /tmp/steady.png \
//	    -bench SteadyState -x sessions -y req/1kmsg -series store -logx -hline 20
//
// On input it cannot plot (nothing matches, an x value that is not a number, a unit no line
// reports) it exits with status 1 and a message saying what, and on which line; it then
// writes no file.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
)

func main() {
	err := run(os.Args[1:], os.Stdin, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchplot: %v\n", err)
		os.Exit(1)
	}
}

// run is the whole command; warnings (skipped lines) go to stderr.
func run(args []string, stdin io.Reader, stderr io.Writer) error {
	fs := flag.NewFlagSet("benchplot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in := fs.String("in", "", "benchmark output to read (default: stdin)")
	out := fs.String("out", "", "PNG file to write (required)")
	bench := fs.String("bench", ".", "regexp selecting benchmarks by name, without the -GOMAXPROCS suffix")
	x := fs.String("x", "", "name parameter on the x axis, e.g. sessions for .../sessions=1000/... (required; values are numbers, optionally with k, M or G)")
	y := fs.String("y", "", "metric unit on the y axis, e.g. ns/op or req/1kmsg (required)")
	series := fs.String("series", "", "name parameter whose values label the lines, e.g. store (default: the parts of the names that differ)")
	var look Look
	fs.BoolVar(&look.LogX, "logx", false, "log scale on the x axis")
	fs.BoolVar(&look.LogY, "logy", false, "log scale on the y axis")
	fs.StringVar(&look.Title, "title", "", "plot title")
	fs.StringVar(&look.XLabel, "xlabel", "", "x axis label (default: the -x parameter)")
	fs.StringVar(&look.YLabel, "ylabel", "", "y axis label (default: the -y unit)")
	fs.Func("hline", "draw a dashed horizontal line at this y value, e.g. a target", func(s string) error {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", s)
		}
		look.HLine = &v
		return nil
	})
	fs.StringVar(&look.HLabel, "hlabel", "", "legend entry of the -hline (default: \"target <value>\")")
	if err := fs.Parse(args); err != nil {
		return err
	}

	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected argument %q (flags come before arguments; the input is -in or stdin)", fs.Arg(0))
	case *out == "":
		return errors.New("-out is required: the PNG file to write")
	case *x == "":
		return errors.New("-x is required: the name parameter on the x axis, e.g. -x sessions")
	case *y == "":
		return errors.New("-y is required: the metric unit on the y axis, e.g. -y ns/op")
	case look.HLabel != "" && look.HLine == nil:
		return errors.New("-hlabel needs -hline")
	}
	re, err := regexp.Compile(*bench)
	if err != nil {
		return fmt.Errorf("-bench: %w", err)
	}
	if look.XLabel == "" {
		look.XLabel = *x
	}
	if look.YLabel == "" {
		look.YLabel = *y
	}

	r := stdin
	if *in != "" {
		f, err := os.Open(*in)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	results, err := Parse(r)
	if err != nil {
		return err
	}
	ss, warnings, err := Group(results, Query{Bench: re, X: *x, Unit: *y, Series: *series})
	if err != nil {
		return err
	}
	for _, w := range warnings {
		fmt.Fprintf(stderr, "benchplot: warning: %s\n", w)
	}
	// Render in memory first, so that a failure leaves no partial file behind.
	var png bytes.Buffer
	if err := Render(&png, ss, look); err != nil {
		return err
	}
	return os.WriteFile(*out, png.Bytes(), 0o644)
}
