package main

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Look is how the plot is drawn.
type Look struct {
	Title, XLabel, YLabel string
	LogX, LogY            bool
	HLine                 *float64 // a horizontal target line, or nil
	HLabel                string   // its legend entry
}

// Size of the PNG: 7 x 4.5 inches at 150 dpi (1050 x 675 pixels), taller by the legend
// below the plot.
const (
	width     = 7 * vg.Inch
	height    = 4.5 * vg.Inch
	dpi       = 150
	legendGap = 0.15 * vg.Inch
	margin    = 0.08 * vg.Inch // right and top, where gonum leaves none
)

// maxXTicks is the most distinct x values that get a tick each, labelled as the benchmark
// names write them (1k, 10k); with more, the axis gets ordinary ticks.
const maxXTicks = 12

// Render draws the series as a PNG line plot: each line through the medians of its points,
// with error bars from the lowest to the highest run where a point has more than one.
func Render(w io.Writer, series []Series, look Look) (err error) {
	// gonum panics on input it cannot draw; the checks below refuse what is known to cause
	// that, and this turns anything they miss into an error rather than a crash.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("cannot draw this plot: %v", r)
		}
	}()
	if len(series) == 0 {
		return fmt.Errorf("nothing to plot")
	}
	if err := checkLog(series, look); err != nil {
		return err
	}
	p := plot.New()
	p.Title.Text = look.Title
	p.X.Label.Text = look.XLabel
	p.Y.Label.Text = look.YLabel
	// The legend goes below the plot, where it never hides a point.
	leg := plot.NewLegend()
	leg.Top, leg.Left = true, true
	leg.Padding = vg.Points(3)
	p.Add(plotter.NewGrid())

	for i, s := range series {
		xys := make(plotter.XYs, len(s.Points))
		errs := make(plotter.YErrors, len(s.Points))
		spread := false
		for j, pt := range s.Points {
			xys[j] = plotter.XY{X: pt.X, Y: pt.Median}
			errs[j].Low, errs[j].High = pt.Median-pt.Min, pt.Max-pt.Median
			spread = spread || len(pt.Values) > 1
		}
		line, points, err := plotter.NewLinePoints(xys)
		if err != nil {
			return fmt.Errorf("series %s: %w", s.Label, err)
		}
		c := plotutil.Color(i)
		line.Color = c
		line.Width = vg.Points(1.5)
		points.Color = c
		points.Shape = plotutil.Shape(i)
		points.Radius = vg.Points(3)
		p.Add(line, points)
		if spread {
			bars, err := plotter.NewYErrorBars(withErrors{xys, errs})
			if err != nil {
				return fmt.Errorf("series %s: %w", s.Label, err)
			}
			bars.Color = c
			p.Add(bars)
		}
		leg.Add(s.Label, line, points)
	}

	// The target line is added over the data's x range, so that the y axis includes it, and
	// stretched to the whole axis once the axes are set.
	var target *plotter.Line
	if look.HLine != nil {
		v := *look.HLine
		xmin, xmax := xRange(series)
		var err error
		target, err = plotter.NewLine(plotter.XYs{{X: xmin, Y: v}, {X: xmax, Y: v}})
		if err != nil {
			return fmt.Errorf("-hline: %w", err)
		}
		target.Color = color.Gray{Y: 96}
		target.Width = vg.Points(1.2)
		target.Dashes = []vg.Length{vg.Points(6), vg.Points(4)}
		p.Add(target)
		lbl := look.HLabel
		if lbl == "" {
			lbl = "target " + strconv.FormatFloat(v, 'g', -1, 64)
		}
		leg.Add(lbl, target)
	}

	if lo, hi := runs(series); hi > 1 {
		n := strconv.Itoa(hi)
		if lo != hi {
			n = fmt.Sprintf("%d to %d", lo, hi)
		}
		leg.Add(fmt.Sprintf("line: median of %s runs; bars: lowest to highest", n))
	}

	setAxes(p, series, look)
	// gonum's linear ticker loops forever on a range that overflows.
	for _, a := range []struct {
		name string
		axis *plot.Axis
	}{{"x", &p.X}, {"y", &p.Y}} {
		if math.IsInf(a.axis.Max-a.axis.Min, 0) {
			return fmt.Errorf("the %s values span more than a float64 holds (%g to %g)", a.name, a.axis.Min, a.axis.Max)
		}
	}
	if target != nil {
		target.XYs[0].X, target.XYs[1].X = p.X.Min, p.X.Max
	}

	var legH vg.Length
	if r := leg.Rectangle(draw.Canvas{}); r.Size().Y > 0 {
		legH = r.Size().Y + legendGap
	}
	c := vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(width, height+legH), vgimg.UseDPI(dpi))}
	dc := draw.New(c)
	plotArea := draw.Crop(dc, 0, -margin, legH, -margin)
	p.Draw(plotArea)
	if legH > 0 {
		left := p.DataCanvas(plotArea).Min.X - dc.Min.X
		leg.Draw(draw.Crop(dc, left, 0, legendGap/2, -height-legendGap/2))
	}
	if _, err := c.WriteTo(w); err != nil {
		return fmt.Errorf("writing the PNG: %w", err)
	}
	return nil
}

type withErrors struct {
	plotter.XYs
	plotter.YErrors
}

// checkLog refuses values a log axis cannot show (gonum panics on them).
func checkLog(series []Series, look Look) error {
	for _, s := range series {
		for _, pt := range s.Points {
			if look.LogX && pt.X <= 0 {
				return fmt.Errorf("-logx: %s has x %s, not above 0", s.Name, pt.XText)
			}
			if look.LogY && pt.Min <= 0 {
				return fmt.Errorf("-logy: %s at x %s has a value of %g, not above 0", s.Name, pt.XText, pt.Min)
			}
		}
	}
	if look.LogY && look.HLine != nil && *look.HLine <= 0 {
		return fmt.Errorf("-logy: -hline %g is not above 0", *look.HLine)
	}
	return nil
}

func setAxes(p *plot.Plot, series []Series, look Look) {
	// The x axis: a tick at each x the benchmarks ran, labelled as their names write it.
	var ticks plot.ConstantTicks
	seen := map[float64]bool{}
	for _, s := range series {
		for _, pt := range s.Points {
			if !seen[pt.X] {
				seen[pt.X] = true
				ticks = append(ticks, plot.Tick{Value: pt.X, Label: pt.XText})
			}
		}
	}
	if look.LogX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = logTicks{}
		padLog(&p.X)
	} else {
		padLinear(&p.X, 0.03, 0.03)
	}
	if len(ticks) <= maxXTicks {
		p.X.Tick.Marker = ticks
	}

	if look.LogY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = logTicks{}
		padLog(&p.Y)
	} else {
		// A linear y axis starts at 0 when every value is positive, so heights compare honestly.
		if p.Y.Min > 0 {
			p.Y.Min = 0
		}
		padLinear(&p.Y, 0, 0.05)
		if p.Y.Min == p.Y.Max {
			p.Y.Max = p.Y.Min + 1
		}
	}
}

// padLinear widens a linear axis by these fractions of its range below and above, unless
// that overflows.
func padLinear(a *plot.Axis, below, above float64) {
	r := a.Max - a.Min
	lo, hi := a.Min-r*below, a.Max+r*above
	if !math.IsInf(lo, 0) && !math.IsInf(hi, 0) {
		a.Min, a.Max = lo, hi
	}
}

// padLog widens a log axis a little on both sides, and to a decade when it holds one value
// (gonum would widen it by 1 on each side, to 0 or below). It computes in logarithms, so
// that a range from 1e-300 to 1e300 does not overflow to a bound of 0.
func padLog(a *plot.Axis) {
	pad := 0.03 * (math.Log10(a.Max) - math.Log10(a.Min))
	if pad == 0 {
		pad = 1
	}
	lo, hi := a.Min/math.Pow(10, pad), a.Max*math.Pow(10, pad)
	if lo > 0 && !math.IsInf(hi, 0) {
		a.Min, a.Max = lo, hi
	}
}

// logTicks is the ticker of a log axis. Up to 6 decades: a tick at each multiple of a power
// of 10, labelled at the powers of 10 when that gives 3 labels, else at 1, 2 and 5 times
// them, else at every multiple; an axis too narrow for 2 labels that way gets gonum's linear
// ticks. Wider: a labelled tick at every power of 10, or every few, up to 10 of them.
// (plot.LogTicks labels only powers of 10, which leaves a narrow axis unlabelled, and ticks
// every multiple of every decade however many.)
type logTicks struct{}

func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	first, last := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if decades := last - first; decades > 6 {
		step := math.Ceil(decades / 10)
		var ticks []plot.Tick
		for e := first; e <= last; e += step {
			if v := math.Pow(10, e); v >= lo && v <= hi {
				ticks = append(ticks, plot.Tick{Value: v, Label: formatTick(v)})
			}
		}
		return ticks
	}
	levels := [][]float64{{1}, {1, 2, 5}, {1, 2, 3, 4, 5, 6, 7, 8, 9}}
	for i, labelled := range levels {
		var ticks []plot.Tick
		n := 0
		for e := first; e <= last; e++ {
			pow := math.Pow(10, e)
			for m := 1.0; m < 10; m++ {
				v := m * pow
				if v < lo || v > hi {
					continue
				}
				t := plot.Tick{Value: v}
				if slices.Contains(labelled, m) {
					t.Label = formatTick(v)
					n++
				}
				ticks = append(ticks, t)
			}
		}
		if n >= 3 || (i == len(levels)-1 && n >= 2) {
			return ticks
		}
	}
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = formatTick(ticks[i].Value)
		}
	}
	return ticks
}

// formatTick writes a tick value without float noise (0.2, not 0.20000000000000001), and
// with a short exponent (2e9) below 0.0001 and from 10,000,000.
func formatTick(v float64) string {
	v, _ = strconv.ParseFloat(strconv.FormatFloat(v, 'g', 12, 64), 64)
	if a := math.Abs(v); a != 0 && (a < 1e-4 || a >= 1e7) {
		mant, exp, _ := strings.Cut(strconv.FormatFloat(v, 'e', -1, 64), "e")
		n, _ := strconv.Atoi(exp)
		return mant + "e" + strconv.Itoa(n)
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

func xRange(series []Series) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, s := range series {
		for _, pt := range s.Points {
			lo = math.Min(lo, pt.X)
			hi = math.Max(hi, pt.X)
		}
	}
	return lo, hi
}
