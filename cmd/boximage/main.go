// Command boximage builds the boxd image index (linux/amd64 + linux/arm64, FROM scratch, static
// cross-builds of the committed sources: pkg/ociimage) and pushes it or pins its digest in the
// chart's ArtifactHub annotation.
//
//	boximage -digest                  print the index digest (nothing pushed)
//	boximage -push -registry H:P ...  push as <registry>/<repo>:<chart version>, print repo@digest
//	boximage -sync-chart              write ghcr.io/langbot-k8s/boxd:<version>@<digest> into Chart.yaml
//	boximage -check-chart             fail unless Chart.yaml pins the digest built now
//
// The registry password is read from $LBK_REGISTRY_PASSWORD (hack/registry.sh env).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"

	"github.com/langbot-k8s/langbot-k8s/pkg/ociimage"
)

// publicImage is where releases publish boxd (the chart's default image).
const publicImage = "ghcr.io/langbot-k8s/boxd"

func main() {
	chart := flag.String("chart", "charts/langbot", "chart directory (its version is the image's version and tag)")
	push := flag.Bool("push", false, "push the index to -registry")
	registry := flag.String("registry", os.Getenv("LBK_REGISTRY"), "registry host:port to push to")
	repo := flag.String("repo", "langbot-k8s/boxd", "repository in the registry")
	user := flag.String("user", os.Getenv("LBK_REGISTRY_USER"), "registry user (password in $LBK_REGISTRY_PASSWORD)")
	caFile := flag.String("ca-file", os.Getenv("LBK_REGISTRY_CA"), "PEM CA of the registry's certificate (empty: system roots)")
	digestOnly := flag.Bool("digest", false, "print the index digest only")
	syncChart := flag.Bool("sync-chart", false, "pin the digest in the chart's artifacthub.io/images annotation")
	checkChart := flag.Bool("check-chart", false, "fail unless the chart pins this digest")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *chart, *push, ociimage.Registry{Host: *registry, Username: *user, Password: os.Getenv("LBK_REGISTRY_PASSWORD"), CAFile: *caFile},
		*repo, *digestOnly, *syncChart, *checkChart); err != nil {
		slog.Error("boximage", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, chart string, push bool, reg ociimage.Registry, repo string, digestOnly, syncChart, checkChart bool) error {
	if push && reg.Host == "" {
		return fmt.Errorf("-push needs -registry (or $LBK_REGISTRY): eval \"$(bash hack/registry.sh env)\"")
	}
	work, err := os.MkdirTemp("", "boximage-")
	if err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	defer os.RemoveAll(work)
	idx, spec, err := ociimage.BuildBoxd(ctx, ".", chart, work)
	if err != nil {
		return fmt.Errorf("build boxd image: %w", err)
	}
	d, err := idx.Digest()
	if err != nil {
		return fmt.Errorf("index digest: %w", err)
	}
	version := spec.Labels[ociimage.LabelVersion]
	switch {
	case digestOnly:
		fmt.Println(d.String())
	case push:
		ref, err := ociimage.Push(ctx, reg, repo, version, idx)
		if err != nil {
			return err
		}
		fmt.Println(ref)
	}
	chartFile := filepath.Join(chart, "Chart.yaml")
	if syncChart || checkChart {
		b, err := os.ReadFile(chartFile)
		if err != nil {
			return fmt.Errorf("read %s: %w", chartFile, err)
		}
		if checkChart {
			pinned, err := ociimage.ChartImageDigest(b, publicImage)
			if err != nil {
				return err
			}
			if pinned != d.String() {
				return fmt.Errorf("%s pins %s@%q but the committed sources build %s: run `make image-digest` and commit Chart.yaml", chartFile, publicImage, pinned, d)
			}
			slog.Info("chart pins the boxd index digest", "digest", d.String())
		}
		if syncChart {
			nb, err := ociimage.SetChartImage(b, publicImage, version, d.String())
			if err != nil {
				return err
			}
			if err := os.WriteFile(chartFile, nb, 0o644); err != nil {
				return fmt.Errorf("write %s: %w", chartFile, err)
			}
			slog.Info("pinned the boxd index digest", "chart", chartFile, "image", publicImage+":"+version+"@"+d.String())
		}
	}
	return nil
}
