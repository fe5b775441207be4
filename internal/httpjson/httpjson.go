// Package httpjson answers an HTTP request with JSON. It is apart from
// internal/jsonutil so that packages linked into the CNI plugin binaries
// (which a container runtime starts for every pod) can use jsonutil
// without linking net/http and the TLS stack it brings.
package httpjson

import (
	"encoding/json"
	"net/http"
)

// Write answers with v as application/json. A write error is not reported: the client sees
// a short body, which its decoder rejects.
func Write(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
