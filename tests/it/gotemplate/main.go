// The Helm chart's templates executed by Go's own text/template, as Helm
// executes them: values decoded from JSON (numbers as float64, as Helm
// holds them) and the six sprig functions the chart may use, with sprig's
// code paths for the argument types the chart passes. tests/it/kubernetes.rs
// compares its output with `bty-lab init --kubernetes` (gtmpl in Rust), so a
// template the two engines read differently fails a test. Helm itself is not
// installable here.
//
// Usage: gotemplate CHART_DIR VALUES_JSON NAMESPACE APP_VERSION TEMPLATE...
// prints the documents as bty-lab writes them; a failing template exits 1
// with Go's message on stderr.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
)

func empty(v interface{}) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == ""
	case bool:
		return !x
	case float64:
		return x == 0
	case int:
		return x == 0
	case map[string]interface{}:
		return len(x) == 0
	case []interface{}:
		return len(x) == 0
	}
	return false
}

func main() {
	chart := os.Args[1]
	var vals map[string]interface{}
	b, err := os.ReadFile(os.Args[2])
	if err != nil {
		panic(err)
	}
	if err := json.Unmarshal(b, &vals); err != nil {
		panic(err)
	}
	ctx := map[string]interface{}{
		"Values":  vals,
		"Release": map[string]interface{}{"Name": "bty", "Namespace": os.Args[3], "Service": "Helm"},
		"Chart":   map[string]interface{}{"Name": "bty", "Version": os.Args[4], "AppVersion": os.Args[4]},
	}
	funcs := template.FuncMap{
		"quote": func(s ...interface{}) string {
			out := []string{}
			for _, x := range s {
				if x != nil {
					out = append(out, fmt.Sprintf("%q", fmt.Sprint(x)))
				}
			}
			return strings.Join(out, " ")
		},
		"default": func(d interface{}, given ...interface{}) interface{} {
			if len(given) == 0 || empty(given[0]) {
				return d
			}
			return given[0]
		},
		"required": func(msg string, v interface{}) (interface{}, error) {
			if empty(v) {
				return v, errors.New(msg)
			}
			return v, nil
		},
		"fail":      func(msg string) (string, error) { return "", errors.New(msg) },
		"hasPrefix": func(p, s string) bool { return strings.HasPrefix(s, p) },
		"int": func(v interface{}) int {
			switch x := v.(type) {
			case float64:
				return int(x)
			case int:
				return x
			case string:
				i, _ := strconv.Atoi(x)
				return i
			}
			return 0
		},
	}
	for _, name := range os.Args[5:] {
		src, err := os.ReadFile(filepath.Join(chart, "templates", name))
		if err != nil {
			panic(err)
		}
		t := template.Must(template.New(name).Funcs(funcs).Parse(string(src)))
		var sb strings.Builder
		if err := t.Execute(&sb, ctx); err != nil {
			fmt.Fprintln(os.Stderr, "ERR", name, err)
			os.Exit(1)
		}
		for _, doc := range strings.Split(sb.String(), "\n---\n") {
			doc = strings.TrimPrefix(doc, "---\n")
			keep := false
			for _, l := range strings.Split(doc, "\n") {
				l = strings.TrimSpace(l)
				if l != "" && !strings.HasPrefix(l, "#") && l != "---" {
					keep = true
				}
			}
			if keep {
				fmt.Printf("---\n# Source: bty/templates/%s\n%s\n", name, strings.TrimRight(doc, " \n\t"))
			}
		}
	}
}
