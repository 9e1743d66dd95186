package web

import (
	"io/fs"
	"regexp"
	"strings"
	"testing"
)

func readStatic(t *testing.T, name string) string {
	t.Helper()
	b, err := fs.ReadFile(Static, name)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return string(b)
}

func TestStaticContainsAssets(t *testing.T) {
	for _, name := range []string{"static/index.html", "static/app.js", "static/style.css", "static/favicon.svg"} {
		t.Run(name, func(t *testing.T) {
			if body := readStatic(t, name); strings.TrimSpace(body) == "" {
				t.Errorf("%s is empty", name)
			}
		})
	}
}

func TestSubFSServesFromRoot(t *testing.T) {
	sub, err := fs.Sub(Static, "static")
	if err != nil {
		t.Fatalf("fs.Sub: %v", err)
	}
	if _, err := fs.Stat(sub, "index.html"); err != nil {
		t.Errorf("index.html not at the root of fs.Sub(Static, \"static\"): %v", err)
	}
}

func TestIndexReferencesAssets(t *testing.T) {
	index := readStatic(t, "static/index.html")
	tests := []struct {
		name string
		re   *regexp.Regexp
	}{
		{"script app.js", regexp.MustCompile(`(?i)<script\b[^>]*\bsrc\s*=\s*["']?/?app\.js["'\s>]`)},
		{"stylesheet style.css", regexp.MustCompile(`(?i)<link\b[^>]*\bhref\s*=\s*["']?/?style\.css["'\s>]`)},
	}
	for _, tt := range tests {
		if !tt.re.MatchString(index) {
			t.Errorf("index.html does not reference %s", tt.name)
		}
	}
}

// urlAttr matches attributes that make the browser load or navigate to a URL.
var urlAttr = regexp.MustCompile(`(?i)\s(src|href|action|formaction|poster|srcset|background)\s*=\s*("[^"]*"|'[^']*'|[^\s>]+)`)

// offSite matches URLs with a scheme (http:, https:, data:, javascript:, ...)
// or protocol-relative URLs.
var offSite = regexp.MustCompile(`(?i)^\s*([a-z][a-z0-9+.-]*:|//)`)

func TestIndexHasNoExternalResources(t *testing.T) {
	index := readStatic(t, "static/index.html")
	matches := urlAttr.FindAllStringSubmatch(index, -1)
	if len(matches) == 0 {
		t.Fatal("found no src/href attributes at all; the pattern is broken")
	}
	for _, m := range matches {
		value := strings.Trim(m[2], `"'`)
		if offSite.MatchString(value) {
			t.Errorf("%s=%q points off-site", m[1], value)
		}
	}
}

func TestIndexHasNoInlineCode(t *testing.T) {
	index := readStatic(t, "static/index.html")

	script := regexp.MustCompile(`(?is)<script\b([^>]*)>(.*?)</script\s*>`)
	scripts := script.FindAllStringSubmatch(index, -1)
	if len(scripts) == 0 {
		t.Fatal("found no <script> element")
	}
	for _, m := range scripts {
		if strings.TrimSpace(m[2]) != "" {
			t.Errorf("inline script body: %q", m[2])
		}
		if !regexp.MustCompile(`(?i)\bsrc\s*=`).MatchString(m[1]) {
			t.Errorf("<script%s> has no src", m[1])
		}
	}

	forbidden := []struct {
		name string
		re   *regexp.Regexp
	}{
		{"style attribute", regexp.MustCompile(`(?i)\sstyle\s*=`)},
		{"<style> element", regexp.MustCompile(`(?i)<style\b`)},
		{"event handler attribute", regexp.MustCompile(`(?i)\son[a-z]+\s*=`)},
		{"javascript: URL", regexp.MustCompile(`(?i)javascript:`)},
	}
	for _, f := range forbidden {
		if loc := f.re.FindStringIndex(index); loc != nil {
			t.Errorf("index.html has a %s near %q", f.name, index[loc[0]:min(len(index), loc[1]+40)])
		}
	}
}

func TestAssetsStayOffline(t *testing.T) {
	tests := []struct {
		file      string
		forbidden []string
	}{
		{"static/app.js", []string{"http://", "https://", "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"}},
		{"static/style.css", []string{"http://", "https://", "@import", "url("}},
	}
	for _, tt := range tests {
		body := readStatic(t, tt.file)
		for _, s := range tt.forbidden {
			if strings.Contains(body, s) {
				t.Errorf("%s contains %q", tt.file, s)
			}
		}
	}
}

// The ids are a contract with the end-to-end tests of the service.
func TestIndexHasElementIDs(t *testing.T) {
	index := readStatic(t, "static/index.html")
	ids := []string{
		"clock", "clock-state", "clock-last-id", "clock-count",
		"topic-input", "subscribe-btn", "topic-state", "events",
		"pub-topic", "pub-type", "pub-data", "pub-token", "publish-btn", "pub-result",
	}
	for _, id := range ids {
		if n := strings.Count(index, `id="`+id+`"`); n != 1 {
			t.Errorf("id %q appears %d times in index.html, want 1", id, n)
		}
	}
}

func TestIndexDeclaresLiveRegions(t *testing.T) {
	index := readStatic(t, "static/index.html")
	for _, id := range []string{"clock", "clock-state"} {
		re := regexp.MustCompile(`<[a-z]+\b[^>]*\bid="` + regexp.QuoteMeta(id) + `"[^>]*>`)
		tag := re.FindString(index)
		if tag == "" {
			t.Errorf("no element with id %q", id)
			continue
		}
		if !strings.Contains(tag, `aria-live="polite"`) {
			t.Errorf("#%s lacks aria-live=\"polite\": %s", id, tag)
		}
	}
}
