package main

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// writeChart draws restart and upgrade times per image size for both
// approaches as an SVG bar chart. The y axis is logarithmic: a cache hit
// and a full export differ by orders of magnitude.
func (r *Results) writeChart(w io.Writer) error {
	panels := []struct{ scenario, title string }{
		{"restart", "restart, unchanged image"},
		{"upgrade", "upgrade v1 → v2"},
	}
	bars := []struct {
		label, color string
		get          func(*Series) *Stats
	}{
		{"docker export | tar", "#d95f02", func(s *Series) *Stats { return s.Old }},
		{"rootswap prepare", "#1b9e77", func(s *Series) *Stats { return &s.New }},
	}
	// The axis spans whole decades around every value shown.
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, p := range panels {
		for _, img := range r.Config.Images {
			if s := r.series(p.scenario, img); s != nil {
				for _, bar := range bars {
					if st := bar.get(s); st != nil && st.MedianMS > 0 {
						lo, hi = math.Min(lo, st.MinMS), math.Max(hi, st.MaxMS)
					}
				}
			}
		}
	}
	if math.IsInf(lo, 0) {
		lo, hi = 1, 1000
	}
	dLo, dHi := math.Floor(math.Log10(math.Max(lo, 0.01))), math.Ceil(math.Log10(hi))
	if dHi <= dLo {
		dHi = dLo + 1
	}

	const (
		panelW, panelH = 360.0, 300.0
		left, top      = 70.0, 50.0
		bottom         = 60.0
		gap            = 80.0
	)
	width := left + float64(len(panels))*(panelW+gap)
	height := top + panelH + bottom + 30
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="20" font-size="15" font-weight="bold">rootswap vs docker export | tar: median wall time (whiskers: min–max), log scale</text>`+"\n", left)
	y := func(v float64) float64 {
		v = math.Max(v, math.Pow(10, dLo))
		return top + panelH - (math.Log10(v)-dLo)/(dHi-dLo)*panelH
	}
	for pi, p := range panels {
		x0 := left + float64(pi)*(panelW+gap)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-weight="bold">%s</text>`+"\n", x0+panelW/2, top-10, html.EscapeString(p.title))
		// Decade grid lines, labelled on the left of each panel.
		for d := dLo; d <= dHi; d++ {
			yy := y(math.Pow(10, d))
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x0, yy, x0+panelW, yy)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#555">%s</text>`+"\n", x0-4, yy+4, fmtMS(math.Pow(10, d)))
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`+"\n", x0, top+panelH, x0+panelW, top+panelH)
		n := len(r.Config.Images)
		groupW := panelW / float64(max(n, 1))
		barW := groupW * 0.8 / float64(len(bars))
		for gi, img := range r.Config.Images {
			gx := x0 + float64(gi)*groupW + groupW*0.1
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", gx+groupW*0.4, top+panelH+18, html.EscapeString(img))
			s := r.series(p.scenario, img)
			if s == nil {
				continue
			}
			for bi, bar := range bars {
				st := bar.get(s)
				if st == nil {
					continue
				}
				bx := gx + float64(bi)*barW
				yy := y(st.MedianMS)
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s</title></rect>`+"\n",
					bx, yy, barW-2, top+panelH-yy, bar.color, html.EscapeString(bar.label), html.EscapeString(img), fmtRange(st))
				cx := bx + (barW-2)/2
				fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#000"/>`+"\n", cx, y(st.MinMS), cx, y(st.MaxMS))
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10">%s</text>`+"\n", cx, math.Min(yy, y(st.MaxMS))-4, fmtMS(st.MedianMS))
			}
		}
	}
	// Legend.
	ly := top + panelH + 40
	for i, bar := range bars {
		lx := left + float64(i)*200
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="12" height="12" fill="%s"/>`+"\n", lx, ly, bar.color)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", lx+18, ly+10, html.EscapeString(bar.label))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
