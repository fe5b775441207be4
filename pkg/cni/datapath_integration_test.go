//go:build integration

package cni

import "testing"

// TestTCBPFDatapathIsolation: see testDatapathIsolation.
func TestTCBPFDatapathIsolation(t *testing.T) { testDatapathIsolation(t, DatapathTCBPF) }
