package perfuse_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"strings"
	"testing"
)

// Every Go snippet in README.md is code from an Example in example_test.go:
// its lines appear there in order, error checks between them allowed. So
// each snippet compiles with the tests, and runs where its Example has
// output.
func TestReadmeSnippetsAreExamples(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "example_test.go", src, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	examples := map[string][]string{}
	for _, decl := range f.Decls {
		if fn, ok := decl.(*ast.FuncDecl); ok && strings.HasPrefix(fn.Name.Name, "Example") {
			body := src[fset.Position(fn.Body.Lbrace).Offset:fset.Position(fn.Body.Rbrace).Offset]
			examples[fn.Name.Name] = lines(string(body))
		}
	}
	snippets := regexp.MustCompile("(?s)```go\n(.*?)```").FindAllStringSubmatch(string(readme), -1)
	if len(snippets) == 0 {
		t.Fatal("README.md has no Go snippets")
	}
	for _, sn := range snippets {
		want := lines(sn[1])
		found := false
		for _, have := range examples {
			if inOrder(want, have) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("README.md snippet is in no Example of example_test.go:\n%s", sn[1])
		}
	}
}

// lines returns s's non-empty lines with runs of white space made one
// space, so gofmt's alignment of comments does not matter.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// inOrder reports whether want is a subsequence of have.
func inOrder(want, have []string) bool {
	i := 0
	for _, h := range have {
		if i < len(want) && h == want[i] {
			i++
		}
	}
	return i == len(want)
}
