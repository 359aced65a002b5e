package perfuse

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// goFuseInAPI lists the exported declarations of a package's files that
// mention a go-fuse package: exported functions and methods of exported
// types by their signature, exported types by their definition (a
// struct's exported and embedded fields, an interface's methods),
// exported constants and variables by their type and value. Whatever
// they name, a caller would have to import go-fuse to use.
func goFuseInAPI(files []*ast.File) []string {
	var found []string
	for _, f := range files {
		fuse := map[string]bool{}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if !strings.HasPrefix(p, "github.com/hanwen/go-fuse/") {
				continue
			}
			name := p[strings.LastIndex(p, "/")+1:]
			if imp.Name != nil {
				name = imp.Name.Name
			}
			fuse[name] = true
		}
		mentions := func(n ast.Node) bool {
			seen := false
			if n == nil || len(fuse) == 0 {
				return false
			}
			ast.Inspect(n, func(n ast.Node) bool {
				if s, ok := n.(*ast.SelectorExpr); ok {
					if x, ok := s.X.(*ast.Ident); ok && fuse[x.Name] {
						seen = true
					}
				}
				return !seen
			})
			return seen
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				name := d.Name.Name
				if d.Recv != nil && len(d.Recv.List) > 0 {
					recv := typeName(d.Recv.List[0].Type)
					if !ast.IsExported(recv) {
						continue
					}
					name = recv + "." + name
				}
				if d.Name.IsExported() && mentions(d.Type) {
					found = append(found, "func "+name)
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						if !s.Name.IsExported() {
							continue
						}
						if s.TypeParams != nil && mentions(s.TypeParams) {
							found = append(found, "type "+s.Name.Name)
						}
						switch t := s.Type.(type) {
						case *ast.StructType:
							for _, fl := range t.Fields.List {
								names := []string{typeName(fl.Type)}
								if len(fl.Names) > 0 {
									names = names[:0]
									for _, n := range fl.Names {
										names = append(names, n.Name)
									}
								}
								for _, n := range names {
									if ast.IsExported(n) && mentions(fl.Type) {
										found = append(found, "field "+s.Name.Name+"."+n)
									}
								}
							}
						case *ast.InterfaceType:
							for _, m := range t.Methods.List {
								if mentions(m.Type) {
									found = append(found, "interface "+s.Name.Name)
								}
							}
						default:
							if mentions(s.Type) {
								found = append(found, "type "+s.Name.Name)
							}
						}
					case *ast.ValueSpec:
						for i, n := range s.Names {
							if !n.IsExported() {
								continue
							}
							if mentions(s.Type) || i < len(s.Values) && mentions(s.Values[i]) {
								found = append(found, "value "+n.Name)
							}
						}
					}
				}
			}
		}
	}
	return found
}

// typeName is the name of a receiver's or an embedded field's type.
func typeName(e ast.Expr) string {
	for {
		switch t := e.(type) {
		case *ast.Ident:
			return t.Name
		case *ast.StarExpr:
			e = t.X
		case *ast.SelectorExpr:
			return t.Sel.Name
		case *ast.IndexExpr:
			e = t.X
		case *ast.IndexListExpr:
			e = t.X
		default:
			return ""
		}
	}
}

// parsePackage parses the Go files of dir, test files left out.
func parsePackage(t *testing.T, dir string) []*ast.File {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		t.Fatalf("no Go files in %s", dir)
	}
	return files
}

// A caller of perfuse or nfsexport never imports go-fuse: no exported
// declaration names one of its types.
func TestNoGoFuseInAPI(t *testing.T) {
	for _, dir := range []string{".", "nfsexport"} {
		for _, d := range goFuseInAPI(parsePackage(t, dir)) {
			t.Errorf("%s: %s mentions go-fuse", dir, d)
		}
	}
}

// goFuseInAPI finds go-fuse wherever the exported API can show it, and
// only there.
func TestGoFuseInAPISeesExposure(t *testing.T) {
	const src = `package p

import (
	"github.com/hanwen/go-fuse/v2/fuse"
	gofs "github.com/hanwen/go-fuse/v2/fs"
)

func Param(a fuse.Attr)                 {}
func Result() (*fuse.AttrOut, error)    { return nil, nil }
func (T) Method(f func(gofs.InodeEmbedder)) {}
func (*T) PtrMethod() []fuse.FileLock   { return nil }
func (t) hidden(fuse.Attr)              {}
func (t) Unexported(fuse.Attr)          {}
func private(fuse.Attr)                 {}
func Body() { _ = fuse.Attr{} }

type T struct {
	Field  fuse.EntryOut
	fuse.InHeader
	A, b   map[string]fuse.Owner
	hidden fuse.Attr
	OK     int
}
type t struct{ Field fuse.Attr }
type Alias = fuse.StatfsOut
type Fn func(*fuse.SetAttrIn)
type I interface{ M() fuse.OutHeader }
type G[X fuse.Attr | int] struct{}

const Flag = fuse.FATTR_MODE
const flag = fuse.FATTR_MODE
var V fuse.Attr
var W, w = fuse.Attr{}, fuse.Attr{}
`
	f, err := parser.ParseFile(token.NewFileSet(), "p.go", src, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	got := goFuseInAPI([]*ast.File{f})
	want := []string{
		"func Param", "func Result", "func T.Method", "func T.PtrMethod",
		"field T.Field", "field T.InHeader", "field T.A",
		"type Alias", "type Fn", "interface I", "type G",
		"value Flag", "value V", "value W",
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("found\n%q\nwant\n%q", got, want)
	}
}
