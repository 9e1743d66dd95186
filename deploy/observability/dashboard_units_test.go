package observability_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
)

// Grafana's units for a rate, by what is counted.
var (
	// countRateUnits are things per second.
	countRateUnits = map[string]bool{
		"cps": true, "ops": true, "reqps": true, "rps": true, "wps": true, "iops": true,
		"eps": true, "mps": true, "recps": true, "rowsps": true,
	}
	// byteRateUnits are bytes (or bits) per second.
	byteRateUnits = map[string]bool{
		"Bps": true, "binBps": true, "bps": true, "binbps": true,
		"KBs": true, "KiBs": true, "MBs": true, "MiBs": true, "GBs": true, "GiBs": true,
	}
	// timeRateUnits are for a rate of seconds (CPU seconds per second): a
	// share of time, read as cores.
	timeRateUnits = map[string]bool{"short": true, "none": true, "percentunit": true}
)

// rateOf returns the counter whose per-second rate expr shows, looking
// through parentheses and aggregations that keep values as they are (sum,
// avg, max, min): sum by (x) (rate(c[5m])) shows the rate of c. For any
// other expression (a gauge, a quantile, a ratio, a filter) ok is false.
func rateOf(expr parser.Expr) (counter string, ok bool) {
	for {
		switch e := expr.(type) {
		case *parser.ParenExpr:
			expr = e.Expr
		case *parser.AggregateExpr:
			switch e.Op {
			case parser.SUM, parser.AVG, parser.MAX, parser.MIN:
				expr = e.Expr
			default:
				return "", false
			}
		case *parser.Call:
			if (e.Func.Name != "rate" && e.Func.Name != "irate") || len(e.Args) != 1 {
				return "", false
			}
			names, err := selectorNames(e.Args[0])
			if err != nil || len(names) != 1 {
				return "", false
			}
			return names[0], true
		default:
			return "", false
		}
	}
}

// computesRate reports whether expr takes a rate anywhere.
func computesRate(expr parser.Expr) bool {
	found := false
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		if c, ok := n.(*parser.Call); ok && (c.Func.Name == "rate" || c.Func.Name == "irate") {
			found = true
		}
		return nil
	})
	return found
}

// targetUnit returns the unit Grafana shows a query's series in: the
// panel's default, as changed by the overrides that pick the query by refId
// (byFrameRefID) or by its legend (byName). A unit set by any other matcher
// is an error: which series it reaches is not known here.
func targetUnit(p panel, tg panelTarget) (string, error) {
	unit := p.FieldConfig.Defaults.Unit
	for _, o := range p.FieldConfig.Overrides {
		for _, prop := range o.Properties {
			if prop.ID != "unit" {
				continue
			}
			v, _ := prop.Value.(string)
			switch o.Matcher.ID {
			case "byFrameRefID":
				if o.Matcher.Options == tg.RefID {
					unit = v
				}
			case "byName":
				if o.Matcher.Options == tg.LegendFormat {
					unit = v
				}
			default:
				return "", fmt.Errorf("a unit override picks series %s %v: pick them byFrameRefID or byName", o.Matcher.ID, o.Matcher.Options)
			}
		}
	}
	return unit, nil
}

// TestDashboardRatesArePerSecond checks every query's unit against what it
// shows: a rate of a counter in a per-second unit (requests, ops or bytes
// per second; a rate of seconds, CPU, as a share: cores), and anything with
// no rate in it never in a per-second unit. Ratios and quantiles of rates
// are left alone.
func TestDashboardRatesArePerSecond(t *testing.T) {
	d := loadDashboard(t)
	rates := 0
	for _, q := range parsedQueries(d) {
		where := fmt.Sprintf("panel %q query %s", q.panel.Title, q.target.RefID)
		unit, err := targetUnit(q.panel, q.target)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		counter, isRate := rateOf(q.expr)
		if isRate {
			rates++
		}
		var want map[string]bool
		switch {
		case isRate && strings.HasSuffix(counter, "_seconds_total"):
			want = timeRateUnits
		case isRate && strings.Contains(counter, "_bytes"): // sse_bytes_sent_total
			want = byteRateUnits
		case isRate:
			want = countRateUnits
		case !computesRate(q.expr) && (countRateUnits[unit] || byteRateUnits[unit]):
			t.Errorf("%s: shows no rate, in the per-second unit %q", where, unit)
		}
		if want != nil && !want[unit] {
			t.Errorf("%s: the rate of %s in unit %q; want one of %v", where, counter, unit, slices.Sorted(maps.Keys(want)))
		}
	}
	if rates == 0 {
		t.Fatal("no query shows a rate: is rateOf reading the queries?")
	}
}
