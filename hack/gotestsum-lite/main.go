// Command gotestsum-lite reads `go test -json` on stdin, prints each package's result and every
// failing test's output, and appends "unit <passed> <failed>" to $STATE_DIR/results/counts.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

func main() {
	passed, failed := 0, 0
	outputs := map[string]*strings.Builder{}
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			fmt.Println(sc.Text())
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "output":
			if outputs[key] == nil {
				outputs[key] = &strings.Builder{}
			}
			outputs[key].WriteString(e.Output)
		case "pass", "fail":
			if e.Test == "" {
				fmt.Printf("%-4s %s (%.1fs)\n", strings.ToUpper(e.Action), e.Package, e.Elapsed)
				if e.Action == "fail" && outputs[key] != nil {
					fmt.Print(outputs[key].String())
				}
				continue
			}
			if e.Action == "pass" {
				passed++
			} else {
				failed++
				fmt.Printf("--- FAIL: %s %s\n%s", e.Package, e.Test, outputs[key])
			}
		}
	}
	fmt.Printf("go test: %d passed, %d failed\n", passed, failed)
	if dir := os.Getenv("STATE_DIR"); dir != "" {
		f, err := os.OpenFile(filepath.Join(dir, "results", "counts"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			label := os.Getenv("RESULTS_LABEL")
			if label == "" {
				label = "unit"
			}
			fmt.Fprintf(f, "%s %d %d\n", label, passed, failed)
			f.Close()
		}
	}
}
