// Command boxbench measures boxd next to the raw Docker Engine API.
//
//	boxbench run --boxd BIN [--n 20] [--json FILE] [--kube]
//	boxbench compare OLD.json NEW.json
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/bench"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: boxbench run|compare ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "run":
		fs := flag.NewFlagSet("run", flag.ExitOnError)
		var o bench.Options
		fs.StringVar(&o.BoxdBinary, "boxd", "", "boxd binary (with boxagent next to it)")
		fs.StringVar(&o.BoxdLog, "boxd-log", "", "write boxd's log to this file")
		fs.StringVar(&o.Image, "image", "langbot-k8s/sandbox:local", "sandbox image")
		fs.StringVar(&o.BoxdImage, "boxd-image", "ghcr.io/langbot-k8s/boxd:0.1.0", "boxd image to report the size of")
		fs.IntVar(&o.N, "n", 20, "samples per workload")
		fs.IntVar(&o.Parallel, "parallel", 16, "sessions created at once")
		fs.IntVar(&o.Lines, "lines", 200, "relay round trips")
		concurrent := fs.String("concurrent", "16,64", "session counts of the concurrent-execs workload (comma-separated, empty = skip)")
		fs.IntVar(&o.Execs, "execs", 20, "execs per session in the concurrent-execs workload")
		out := fs.String("json", "", "write the report as JSON here")
		var ko bench.KubeOptions
		kube := fs.Bool("kube", false, "also measure the kubernetes backend on the cluster of KUBECONFIG (hack/cluster.sh)")
		fs.StringVar(&ko.AgentImage, "agent-image", "ghcr.io/langbot-k8s/boxd:0.1.0", "boxd image in the node's containerd (kubernetes rows)")
		fs.IntVar(&ko.Sessions, "kube-sessions", 16, "sessions of the kubernetes concurrent-execs workload")
		fs.IntVar(&ko.Execs, "kube-execs", 20, "execs per session there")
		_ = fs.Parse(os.Args[2:])
		for _, f := range strings.Split(*concurrent, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			n, err := strconv.Atoi(f)
			if err != nil || n < 1 {
				fmt.Fprintf(os.Stderr, "boxbench: --concurrent: %q is not a positive session count\n", f)
				os.Exit(2)
			}
			o.Concurrent = append(o.Concurrent, n)
		}
		rep, err := bench.Run(context.Background(), o)
		if err == nil && *kube {
			err = bench.RunKube(context.Background(), o, ko, rep)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "boxbench:", err)
			os.Exit(1)
		}
		rep.Markdown(os.Stdout)
		if *out != "" {
			b, _ := json.MarshalIndent(rep, "", "  ")
			if err := os.WriteFile(*out, b, 0o644); err != nil {
				fmt.Fprintln(os.Stderr, "boxbench:", err)
				os.Exit(1)
			}
		}
	case "compare":
		if len(os.Args) != 4 {
			fmt.Fprintln(os.Stderr, "usage: boxbench compare OLD.json NEW.json")
			os.Exit(2)
		}
		old, err := bench.Load(os.Args[2])
		if err == nil {
			var cur *bench.Report
			if cur, err = bench.Load(os.Args[3]); err == nil {
				bench.Compare(os.Stdout, old, cur)
				return
			}
		}
		fmt.Fprintln(os.Stderr, "boxbench:", err)
		os.Exit(1)
	default:
		fmt.Fprintln(os.Stderr, "usage: boxbench run|compare ...")
		os.Exit(2)
	}
}
