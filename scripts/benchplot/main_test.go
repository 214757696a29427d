package main

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTheCommandRendersAValidPNG(t *testing.T) {
	out := filepath.Join(t.TempDir(), "steady.png")
	var stderr bytes.Buffer
	err := run([]string{
		"-in", "testdata/steady.txt", "-out", out, "-bench", "SteadyState",
		"-x", "sessions", "-y", "req/1kmsg", "-series", "store", "-logx",
		"-hline", "20", "-hlabel", "target", "-title", "Steady state",
	}, strings.NewReader(""), &stderr)
	if err != nil {
		t.Fatalf("%v (stderr: %s)", err, &stderr)
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr: %s", &stderr)
	}
	img := decodePNG(t, out)
	b := img.Bounds()
	if b.Dx() != 1050 || b.Dy() <= 675 {
		t.Errorf("size %dx%d, want 1050 wide and taller than 675 (the legend is below the plot)", b.Dx(), b.Dy())
	}
	// Something is drawn in colour: the series lines, not only black text on white.
	coloured := 0
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if max(r, g, bl)-min(r, g, bl) > 0x4000 {
				coloured++
			}
		}
	}
	if coloured < 500 {
		t.Errorf("only %d coloured pixels", coloured)
	}
}

func TestTheCommandReadsStdinAndDrawsLogAxesAndSingleRuns(t *testing.T) {
	in := `goos: linux
BenchmarkColdStart/segments=10-2  1  0.12 s
BenchmarkColdStart/segments=100-2  1  0.4 s
BenchmarkColdStart/segments=1k-2  1  1.9 s
BenchmarkColdStart/segments=100k-2  1  35 s
PASS
`
	out := filepath.Join(t.TempDir(), "cold.png")
	var stderr bytes.Buffer
	if err := run([]string{"-out", out, "-x", "segments", "-y", "s", "-logx", "-logy"}, strings.NewReader(in), &stderr); err != nil {
		t.Fatal(err)
	}
	decodePNG(t, out)
}

func TestASinglePointOnLogAxesDoesNotPanic(t *testing.T) {
	out := filepath.Join(t.TempDir(), "one.png")
	in := "BenchmarkX/n=1k-2 1 5 u\n"
	if err := run([]string{"-out", out, "-x", "n", "-y", "u", "-logx", "-logy", "-hline", "3"}, strings.NewReader(in), &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	decodePNG(t, out)
}

func TestTheCommandFailsClearlyAndWritesNothing(t *testing.T) {
	const sample = "testdata/steady.txt"
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no -out", []string{"-in", sample, "-x", "sessions", "-y", "ns/op"}, "-out is required"},
		{"no -x", []string{"-in", sample, "-y", "ns/op"}, "-x is required"},
		{"no -y", []string{"-in", sample, "-x", "sessions"}, "-y is required"},
		{"a missing input file", []string{"-in", "testdata/nope.txt", "-x", "sessions", "-y", "ns/op"}, "nope.txt: no such file"},
		{"a bad -bench", []string{"-in", sample, "-bench", "(", "-x", "sessions", "-y", "ns/op"}, "-bench: error parsing regexp"},
		{"a bad -hline", []string{"-in", sample, "-x", "sessions", "-y", "ns/op", "-hline", "lots"}, `"lots" is not a number`},
		{"-hlabel without -hline", []string{"-in", sample, "-x", "sessions", "-y", "ns/op", "-hlabel", "t"}, "-hlabel needs -hline"},
		{"an argument", []string{"-in", sample, "-x", "sessions", "-y", "ns/op", "extra"}, `unexpected argument "extra"`},
		{"no match", []string{"-in", sample, "-bench", "Nope", "-x", "sessions", "-y", "ns/op"}, `no benchmark matches -bench "Nope"`},
		{"an unknown unit", []string{"-in", sample, "-bench", "Steady", "-x", "sessions", "-y", "req/op"}, `unknown unit "req/op"`},
		{"a non-numeric x", []string{"-in", sample, "-bench", "Steady", "-x", "store", "-y", "ns/op"}, `"memory" is not a number`},
		{"a zero on a log x axis", []string{"-bench", "Z", "-x", "n", "-y", "u", "-logx"}, "-logx: BenchmarkZ has x 0, not above 0"},
		{"a zero on a log y axis", []string{"-bench", "Y", "-x", "n", "-y", "u", "-logy"}, "-logy: BenchmarkY at x 1 has a value of 0, not above 0"},
		{"a target below 0 on a log y axis", []string{"-bench", "Z", "-x", "n", "-y", "u", "-hline", "-1", "-logy"}, "-logy: -hline -1 is not above 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.png")
			args := tc.args
			if !strings.Contains(tc.name, "-out") {
				args = append([]string{"-out", out}, args...)
			}
			stdin := "BenchmarkZ/n=0-2 1 1 u\nBenchmarkZ/n=1-2 1 1 u\nBenchmarkY/n=1-2 1 0 u\n"
			err := run(args, strings.NewReader(stdin), &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("%s was written (stat: %v)", out, err)
			}
		})
	}
}

func decodePNG(t *testing.T, path string) image.Image {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) == 0 {
		t.Fatal("empty PNG")
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("not a valid PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() == 0 || b.Dy() == 0 {
		t.Fatalf("PNG of size %dx%d", b.Dx(), b.Dy())
	}
	return img
}

func TestExtremeValuesFailClearlyOrPlot(t *testing.T) {
	for _, tc := range []struct{ in, flags, want string }{
		{"BenchmarkX/n=1-2 1 1e308 u\nBenchmarkX/n=2-2 1 -1e308 u\n", "", "the y values span more than a float64 holds"},
		{"BenchmarkX/n=1.7e308-2 1 1 u\nBenchmarkX/n=-1.7e308-2 1 1 u\n", "", "the x values span more than a float64 holds"},
		{"BenchmarkX/n=1e-300-2 1 1e300 u\nBenchmarkX/n=1e300-2 1 1e-300 u\n", "-logx -logy", ""},
		{"BenchmarkX/n=1-2 1 5e-324 u\nBenchmarkX/n=2-2 1 1.7e308 u\n", "-logy", ""},
		{"BenchmarkX/n=7-2 1 0 u\nBenchmarkX/n=7-2 1 0 u\n", "", ""},
	} {
		args := append([]string{"-out", filepath.Join(t.TempDir(), "x.png"), "-x", "n", "-y", "u", "-hline", "1"}, strings.Fields(tc.flags)...)
		err := run(args, strings.NewReader(tc.in), &bytes.Buffer{})
		if tc.want == "" && err != nil {
			t.Errorf("%q %s: %v", tc.in, tc.flags, err)
		}
		if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%q %s: got %v, want an error containing %q", tc.in, tc.flags, err, tc.want)
		}
	}
}

// FuzzRender looks for values gonum cannot draw that Render does not refuse first (Render
// turns a panic into a "cannot draw" error; that error is a failure here).
func FuzzRender(f *testing.F) {
	f.Add(100.0, 31.2, 1000.0, 13.7, 20.0, true, false)
	f.Add(1.0, 1.0, 1.0, 1.0, 1.0, true, true)
	f.Add(-1.0, 0.0, 1e300, 1e-300, 0.0, false, false)
	f.Fuzz(func(t *testing.T, x1, y1, x2, y2, h float64, logx, logy bool) {
		in := fmt.Sprintf("BenchmarkX/n=%g-2 1 %g u\nBenchmarkX/n=%g-2 1 %g u\n", x1, y1, x2, y2)
		var png bytes.Buffer
		results, err := Parse(strings.NewReader(in))
		if err != nil {
			return
		}
		series, _, err := Group(results, Query{X: "n", Unit: "u"})
		if err != nil {
			return
		}
		err = Render(&png, series, Look{LogX: logx, LogY: logy, HLine: &h})
		if err != nil && strings.Contains(err.Error(), "cannot draw") {
			t.Fatal(err)
		}
	})
}
