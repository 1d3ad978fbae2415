//go:build !linux

package main

func harden() error    { return nil }
func guardInit() error { return nil }
