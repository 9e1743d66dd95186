package config

import (
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"
)

// Variable describes one setting.
type Variable struct {
	Name    string // the full name, such as SSE_ADDR
	Type    string // what it accepts, such as "duration"
	Default string // as it would be written in the environment; "" when empty
	Desc    string
}

// Variables lists every setting in declaration order, with its default.
func Variables() []Variable {
	t := reflect.TypeFor[Config]()
	d := reflect.ValueOf(Defaults())
	var out []Variable
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("envconfig")
		if tag == "" {
			continue // Resolved: not a variable
		}
		out = append(out, Variable{
			Name:    Prefix + "_" + tag,
			Type:    kind(f.Type),
			Default: envString(d.Field(i)),
			Desc:    f.Tag.Get("desc"),
		})
	}
	return out
}

func kind(t reflect.Type) string {
	switch {
	case t == reflect.TypeFor[time.Duration]():
		return "duration"
	case t.Kind() == reflect.Slice:
		return "list"
	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		return "integer"
	}
	return t.Kind().String()
}

func envString(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case []string:
		return strings.Join(x, ",")
	case time.Duration:
		return shortDuration(x)
	default:
		return fmt.Sprint(x)
	}
}

// shortDuration writes d as Go does, without zero trailing units: 1h, not
// 1h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// usageWidth is the widest line Usage writes, so `sse-service -h` reads
// well in a terminal or a pull request.
const usageWidth = 100

// Usage writes every variable with its type and default on one line and its
// description wrapped below, no line wider than 100 columns.
func Usage(w io.Writer) error {
	var b strings.Builder
	for _, v := range Variables() {
		def := v.Default
		if def == "" {
			def = "none"
		}
		fmt.Fprintf(&b, "  %s (%s, default %s)\n", v.Name, v.Type, def)
		wrap(&b, v.Desc, "      ", usageWidth)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// wrap writes text in lines of at most width columns, each after indent.
func wrap(b *strings.Builder, text, indent string, width int) {
	line := indent
	for _, word := range strings.Fields(text) {
		if len(line) > len(indent) && len(line)+1+len(word) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += word
	}
	if len(line) > len(indent) {
		b.WriteString(line + "\n")
	}
}

// Unknown returns the SSE_* variables in environ (as os.Environ gives it)
// that are not settings, such as typos or settings of a newer version, so
// they can be reported instead of silently ignored. A name close to a
// setting's comes with "(did you mean SSE_...?)".
func Unknown(environ []string) []string {
	vars := Variables()
	known := make(map[string]bool, len(vars))
	for _, v := range vars {
		known[v.Name] = true
	}
	var out []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, Prefix+"_") || known[k] {
			continue
		}
		if s := suggest(k, vars); s != "" {
			k += " (did you mean " + s + "?)"
		}
		out = append(out, k)
	}
	return out
}

// suggest returns the setting nearest to name, when it is near enough to
// be a typo: at most 2 edits for names of up to 12 characters, 3 above.
func suggest(name string, vars []Variable) string {
	best, bestD := "", 3
	if len(name) > 12+len(Prefix)+1 {
		bestD = 4
	}
	for _, v := range vars {
		if d := distance(strings.ToUpper(name), v.Name); d < bestD {
			best, bestD = v.Name, d
		}
	}
	return best
}

// distance is the Damerau-Levenshtein (optimal string alignment) distance
// of a and b, in bytes: a swap of two neighbours counts as one edit.
func distance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
