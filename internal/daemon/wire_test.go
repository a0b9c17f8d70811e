package daemon

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/jobs"
)

// stateWords lists the string constants of type typeName declared in the
// package in dir (its non-test files), read from the source: Go cannot
// enumerate a type's constants at run time, and a list kept by hand here
// would be the copy that goes stale.
func stateWords(t *testing.T, dir, typeName string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var words []string
	fset := token.NewFileSet()
	for _, f := range files {
		if matched, _ := filepath.Match("*_test.go", filepath.Base(f)); matched {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range file.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != typeName {
					continue
				}
				for _, v := range vs.Values {
					lit, ok := v.(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						t.Fatalf("%s: a %s constant that is not a string literal: the wire test cannot read it", fset.Position(v.Pos()), typeName)
					}
					w, _ := strconv.Unquote(lit.Value)
					words = append(words, w)
				}
			}
		}
	}
	slices.Sort(words)
	return words
}

// TestEveryJobStateHasAWireWord: the engine's job states and the API's are
// the same words, so wireState's conversion is total and the CLI and the
// page know every state the engine can report.
func TestEveryJobStateHasAWireWord(t *testing.T) {
	engine := stateWords(t, "../jobs", "State")
	wire := stateWords(t, "../apitype", "JobState")
	if len(engine) < 8 {
		t.Fatalf("found only %d job states in internal/jobs: %v", len(engine), engine)
	}
	if !slices.Equal(engine, wire) {
		t.Fatalf("job states differ:\n engine (internal/jobs State):       %v\n wire (internal/apitype JobState): %v", engine, wire)
	}
	for _, w := range engine {
		if got := wireState(jobs.State(w)); string(got) != w {
			t.Errorf("wireState(%q) = %q", w, got)
		}
	}
}

// TestWireSnapshotCarriesEveryField: the engine's snapshot and the API's
// have the same fields, and the conversion copies each of them. A field
// added on one side only, or not copied, fails here.
func TestWireSnapshotCarriesEveryField(t *testing.T) {
	for _, pair := range [][2]reflect.Type{
		{reflect.TypeFor[jobs.Snapshot](), reflect.TypeFor[apitype.Snapshot]()},
		{reflect.TypeFor[jobs.JobInfo](), reflect.TypeFor[apitype.JobInfo]()},
	} {
		if a, b := fieldNames(pair[0]), fieldNames(pair[1]); !slices.Equal(a, b) {
			t.Errorf("%s has fields %v,\n%s has %v", pair[0], a, pair[1], b)
		}
	}
	var snap jobs.Snapshot
	n := 0
	fill(reflect.ValueOf(&snap).Elem(), &n)
	if n < 20 {
		t.Fatalf("filled only %d values: %+v", n, snap)
	}
	sameByName(t, "Snapshot", reflect.ValueOf(snap), reflect.ValueOf(wireSnapshot(snap)))

	// Empty lists stay lists (the API sends [] for an empty queue), and
	// no active job stays none.
	w := wireSnapshot(jobs.Snapshot{Queue: []jobs.JobInfo{}, Finished: []jobs.JobInfo{}})
	if w.Queue == nil || w.Finished == nil || w.Active != nil {
		t.Errorf("empty snapshot: %+v", w)
	}
}

func fieldNames(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		names = append(names, f.Name)
	}
	slices.Sort(names)
	return names
}

// fill sets every field reachable from v to a distinct non-zero value
// (a state field to a real state), counting them in n.
func fill(v reflect.Value, n *int) {
	*n++
	switch {
	case v.Type() == reflect.TypeFor[time.Time]():
		v.Set(reflect.ValueOf(time.Date(2026, 1, 1, 0, 0, *n, 0, time.UTC)))
		return
	case v.Type() == reflect.TypeFor[jobs.State]():
		v.SetString(string(jobs.Paused))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			fill(v.Field(i), n)
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), n)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		fill(v.Index(0), n)
		fill(v.Index(1), n)
	case reflect.String:
		v.SetString("s" + strconv.Itoa(*n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(*n))
	case reflect.Float64:
		v.SetFloat(float64(*n) + 0.5)
	default:
		panic("wire_test: fill does not know " + v.Type().String() + ": teach it")
	}
}

// sameByName compares an engine value with its API counterpart field by
// field name (string-kinded types by their words).
func sameByName(t *testing.T, path string, a, b reflect.Value) {
	t.Helper()
	if a.Type() == reflect.TypeFor[time.Time]() {
		if !a.Interface().(time.Time).Equal(b.Interface().(time.Time)) {
			t.Errorf("%s: %v became %v", path, a, b)
		}
		return
	}
	switch a.Kind() {
	case reflect.Struct:
		for i := range a.NumField() {
			name := a.Type().Field(i).Name
			bf := b.FieldByName(name)
			if !bf.IsValid() {
				t.Errorf("%s.%s: missing on the API side", path, name)
				continue
			}
			sameByName(t, path+"."+name, a.Field(i), bf)
		}
	case reflect.Pointer:
		if a.IsNil() != b.IsNil() {
			t.Errorf("%s: nil %v became nil %v", path, a.IsNil(), b.IsNil())
		} else if !a.IsNil() {
			sameByName(t, path, a.Elem(), b.Elem())
		}
	case reflect.Slice:
		if a.Len() != b.Len() {
			t.Errorf("%s: %d elements became %d", path, a.Len(), b.Len())
			return
		}
		for i := range a.Len() {
			sameByName(t, path+"["+strconv.Itoa(i)+"]", a.Index(i), b.Index(i))
		}
	case reflect.String:
		if a.String() != b.String() {
			t.Errorf("%s: %q became %q", path, a.String(), b.String())
		}
	default:
		if a.Interface() != b.Interface() {
			t.Errorf("%s: %v became %v", path, a, b)
		}
	}
}
