package cibaproxy_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// module is the import path of the repository.
const module = "github.com/cibaproxy/cibaproxy/"

// floors are the packages of the core, each on a floor: a package imports
// only packages of lower floors (downward), never one of its own floor or
// above. The README's Development section draws the same graph.
var floors = map[string]int{
	"cibaproxy/cibaclient":           1,
	"cibaproxy/internal/clientip":    1,
	"cibaproxy/internal/mask":        1,
	"cibaproxy/internal/random":      1,
	"cibaproxy/internal/signkey":     1,
	"cibaproxy/internal/record":      1,
	"cibaproxy/internal/urls":        1,
	"cibaproxy/oauth":                1,
	"cibaproxy/store":                1,
	"cibaproxy/authn":                2,
	"cibaproxy/clients":              2,
	"cibaproxy/issuer":               2,
	"cibaproxy/outbox":               2,
	"cibaproxy/store/internal/codec": 2,
	"cibaproxy/store/badgerstore":    3,
	"cibaproxy/store/redisstore":     3,
	"cibaproxy/store/storetest":      2,
	"cibaproxy/users":                2,
	"cibaproxy/authn/httpchannel":    3,
	"cibaproxy/mail":                 3,
	"cibaproxy/metrics":              3,
	"cibaproxy/ping":                 3,
	"cibaproxy/upstream":             3,
	"cibaproxy":                      4,
	"cibaproxy/authn/email":          4,
	"cibaproxy/cibatest":             5,
}

// testKits are imported by tests only.
var testKits = []string{"cibaproxy/cibatest", "cibaproxy/store/storetest"}

// TestImportsGoDownward reads the imports of every non-test file of the
// core and fails on one that runs upward (or sideways), on a package
// missing from floors, on a test kit imported by production code, and on
// any Caddy import: the core is read, tested and reused without Caddy.
func TestImportsGoDownward(t *testing.T) {
	imports := coreImports(t)
	for pkg := range floors {
		if _, ok := imports[pkg]; !ok {
			t.Errorf("floors names %s, which is no package of the core (any more)", pkg)
		}
	}
	for pkg, deps := range imports {
		floor, ok := floors[pkg]
		if !ok {
			t.Errorf("package %s has no floor: add it to floors (and to the README's graph)", pkg)
			continue
		}
		for _, dep := range deps {
			if strings.Contains(dep, "caddyserver/caddy") {
				t.Errorf("%s imports %s: the core imports nothing of Caddy", pkg, dep)
				continue
			}
			own, ok := strings.CutPrefix(dep, module)
			if !ok {
				continue // the standard library and other modules
			}
			if slices.Contains(testKits, own) {
				t.Errorf("%s imports the test kit %s", pkg, own)
			}
			df, ok := floors[own]
			switch {
			case !ok:
				t.Errorf("%s imports %s, which has no floor", pkg, own)
			case df >= floor:
				t.Errorf("%s (floor %d) imports %s (floor %d): imports go down only", pkg, floor, own, df)
			}
		}
	}
}

// coreImports returns the imports of the non-test files of each package
// under cibaproxy/, by package path relative to the module.
func coreImports(t *testing.T) map[string][]string {
	t.Helper()
	out := make(map[string][]string)
	fset := token.NewFileSet()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != "." && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), "_") || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		pkg := filepath.ToSlash(filepath.Join("cibaproxy", filepath.Dir(path)))
		if _, seen := out[pkg]; !seen {
			out[pkg] = nil
		}
		for _, imp := range f.Imports {
			p, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				return err
			}
			if !slices.Contains(out[pkg], p) {
				out[pkg] = append(out[pkg], p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
