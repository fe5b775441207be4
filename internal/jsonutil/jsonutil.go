package jsonutil

import (
	"encoding/json"
	"fmt"
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
