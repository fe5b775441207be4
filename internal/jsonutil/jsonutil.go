package jsonutil

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// MustMarshal encodes v, which must be plain data (no channels, funcs or cyclic values): an
// error is a programming error, so it panics naming the type.
func MustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("jsonutil: cannot encode %T: %v", v, err))
	}
	return b
}

// WriteHTTP answers with v as application/json. A write error is not reported: the client sees
// a short body, which its decoder rejects.
func WriteHTTP(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
