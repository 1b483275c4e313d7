package caddymodule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// The adapt goldens in testdata/caddyfile_adapt follow Caddy's format: a
// Caddyfile, a line of ten dashes, then the expected JSON. When adaptation
// must fail, the expected part is instead a line starting with "error:",
// whose rest must be a substring of the adapter's error. The Caddyfile is
// adapted under the golden's own file name, so "name.caddyfiletest:<line>"
// in an error names the line of the golden file itself.
//
// UPDATE_GOLDEN=1 rewrites every golden with what the adapter produces.
const (
	goldenDir       = "testdata/caddyfile_adapt"
	goldenSeparator = "----------"
	goldenErrPrefix = "error:"
)

func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.caddyfiletest"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no goldens in %s", goldenDir)
	}
	update := os.Getenv("UPDATE_GOLDEN") == "1"
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(strings.TrimSuffix(name, ".caddyfiletest"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			input, expected, ok := strings.Cut(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n"+goldenSeparator+"\n")
			if !ok {
				t.Fatalf("%s has no %q line", name, goldenSeparator)
			}
			input = strings.TrimRight(input, "\n") + "\n"
			expected = strings.TrimSpace(expected)
			wantErr := strings.HasPrefix(expected, goldenErrPrefix)

			got, warnings, err := adaptCaddyfile(name, input)
			for _, w := range warnings {
				t.Logf("warning: %s:%d: %s: %s", w.File, w.Line, w.Directive, w.Message)
			}

			if update {
				var out string
				if err != nil {
					out = goldenErrPrefix + " " + err.Error()
				} else {
					out = string(got)
				}
				if werr := os.WriteFile(file, []byte(input+goldenSeparator+"\n"+out+"\n"), 0o644); werr != nil {
					t.Fatal(werr)
				}
				t.Logf("updated %s", name)
				return
			}

			if wantErr {
				want := strings.TrimSpace(strings.TrimPrefix(expected, goldenErrPrefix))
				if err == nil {
					t.Fatalf("adapting succeeded, want an error containing %q; got\n%s", want, got)
				}
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error\n\t%s\ndoes not contain\n\t%s", err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("adapting: %v", err)
			}
			want, err := canonicalJSON([]byte(expected))
			if err != nil {
				t.Fatalf("the golden's JSON: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("adapted JSON differs from the golden (rerun with UPDATE_GOLDEN=1 to accept)\n%s", lineDiff(string(want), string(got)))
			}
		})
	}
}

// adaptCaddyfile adapts input as the file name and returns the canonical
// JSON.
func adaptCaddyfile(name, input string) ([]byte, []caddyconfig.Warning, error) {
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		return nil, nil, os.ErrNotExist
	}
	out, warnings, err := adapter.Adapt([]byte(input), map[string]any{"filename": name})
	if err != nil {
		return nil, warnings, err
	}
	canon, err := canonicalJSON(out)
	return canon, warnings, err
}

// canonicalJSON re-encodes a JSON document with sorted keys and tab
// indentation, so that goldens compare by content.
func canonicalJSON(b []byte) ([]byte, error) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "\t")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// lineDiff shows the lines of want and got from the first that differs.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	i := 0
	for i < len(w) && i < len(g) && w[i] == g[i] {
		i++
	}
	var b strings.Builder
	b.WriteString("first difference at line " + strconv.Itoa(i+1) + "\n")
	for j := i; j < len(w) && j < i+15; j++ {
		b.WriteString("- " + w[j] + "\n")
	}
	for j := i; j < len(g) && j < i+15; j++ {
		b.WriteString("+ " + g[j] + "\n")
	}
	return b.String()
}

// TestAdaptCaddyfileExample adapts the repository's Caddyfile.example, the
// configuration README tells users to start from.
func TestAdaptCaddyfileExample(t *testing.T) {
	data, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	out, warnings, err := adaptCaddyfile("Caddyfile.example", string(data))
	if err != nil {
		t.Fatalf("adapting Caddyfile.example: %v", err)
	}
	for _, w := range warnings {
		t.Logf("warning: %s:%d: %s: %s", w.File, w.Line, w.Directive, w.Message)
	}
	handlers := siteHandlers(t, out)
	if len(handlers) == 0 || handlers[0] != "ciba" {
		t.Fatalf("the site's handlers are %v, want ciba first", handlers)
	}
	// the example's ciba block must keep every top-level setting it shows
	h := firstCibaHandler(t, out)
	for _, key := range []string{"upstream", "upstream_via", "public_url", "storage", "users", "clients", "email", "exchange", "limits"} {
		if _, ok := h[key]; !ok {
			t.Errorf("the adapted ciba handler lacks %q: %v", key, h)
		}
	}
}

// TestDirectiveOrder checks that the ciba handler runs before handle,
// route and reverse_proxy without an order global option, wherever the
// directive appears in the site block.
func TestDirectiveOrder(t *testing.T) {
	for _, tc := range []struct{ name, site string }{
		{"after reverse_proxy", "reverse_proxy 127.0.0.1:8080\n\tciba {\n\t\tusers u.json\n\t}"},
		{"after handle blocks", "handle /api/* {\n\t\trespond api\n\t}\n\thandle {\n\t\treverse_proxy 127.0.0.1:8080\n\t}\n\tciba {\n\t\tusers u.json\n\t}"},
		{"after route", "route {\n\t\treverse_proxy 127.0.0.1:8080\n\t}\n\tciba {\n\t\tusers u.json\n\t}"},
		{"after basic_auth", "basic_auth /admin/* {\n\t\tbob $2a$14$Zkx19XLiW6VYouLHR5NmfOFU0z2GTNmpkT/5qqR7hx4IjWJPDhjvG\n\t}\n\treverse_proxy 127.0.0.1:8080\n\tciba {\n\t\tusers u.json\n\t}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			input := "{\n\tadmin off\n}\n\nidp.example.com {\n\t" + tc.site + "\n}\n"
			out, _, err := adaptCaddyfile("Caddyfile", input)
			if err != nil {
				t.Fatalf("adapting: %v\n%s", err, input)
			}
			handlers := siteHandlers(t, out)
			if len(handlers) < 2 || handlers[0] != "ciba" {
				t.Errorf("the site's handlers are %v, want ciba first\n%s", handlers, out)
			}
		})
	}
}

// siteHandlers returns the handler names of the first server's first
// route's subroute, in order: the top-level routes of the site.
func siteHandlers(t *testing.T, cfg []byte) []string {
	t.Helper()
	var doc struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []struct {
							Handler string `json:"handler"`
							Routes  []struct {
								Handle []struct {
									Handler string `json:"handler"`
								} `json:"handle"`
							} `json:"routes"`
						} `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(cfg, &doc); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, srv := range doc.Apps.HTTP.Servers {
		if len(srv.Routes) != 1 || len(srv.Routes[0].Handle) != 1 || srv.Routes[0].Handle[0].Handler != "subroute" {
			t.Fatalf("want one site route holding a subroute, got %s", cfg)
		}
		for _, r := range srv.Routes[0].Handle[0].Routes {
			for _, h := range r.Handle {
				names = append(names, h.Handler)
			}
		}
	}
	return names
}

// firstCibaHandler returns the first ciba handler's JSON object.
func firstCibaHandler(t *testing.T, cfg []byte) map[string]any {
	t.Helper()
	var found map[string]any
	var walk func(v any)
	walk = func(v any) {
		if found != nil {
			return
		}
		switch v := v.(type) {
		case map[string]any:
			if v["handler"] == "ciba" {
				found = v
				return
			}
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	var v any
	if err := json.Unmarshal(cfg, &v); err != nil {
		t.Fatal(err)
	}
	walk(v)
	if found == nil {
		t.Fatalf("no ciba handler in %s", cfg)
	}
	return found
}

// TestAdaptREADMECaddyfiles adapts every Caddyfile the README shows (its
// code blocks with a site or a ciba block in them), so none of them is a
// configuration that does not load.
func TestAdaptREADMECaddyfiles(t *testing.T) {
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeCaddyfiles(string(data))
	if len(blocks) < 3 {
		t.Fatalf("found %d Caddyfiles in the README, want at least 3 (the site, a replica, the balancer)", len(blocks))
	}
	for i, b := range blocks {
		if _, _, err := adaptCaddyfile(fmt.Sprintf("README block %d", i+1), b); err != nil {
			t.Errorf("the README's Caddyfile %d does not adapt: %v\n%s", i+1, err, b)
		}
	}
}

// readmeCaddyfiles returns the fenced blocks of a README, without a
// language, that are Caddyfiles: their first line opens a block (the
// global options or a site), and they are not a sketch of the syntax
// (with "…" in it).
func readmeCaddyfiles(md string) []string {
	var out []string
	parts := strings.Split(md, "\n```")
	for i := 1; i < len(parts); i += 2 {
		body, ok := strings.CutPrefix(parts[i], "\n")
		if !ok {
			continue // a language after the fence: not a Caddyfile
		}
		first, _, _ := strings.Cut(body, "\n")
		if strings.HasSuffix(first, "{") && !strings.Contains(body, "…") {
			out = append(out, body)
		}
	}
	return out
}
