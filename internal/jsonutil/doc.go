// Package jsonutil encodes a value that cannot fail to encode, a helper several berth
// components had a copy of. It imports only encoding/json and fmt, so it may be imported by
// any berth package, including those linked into the CNI plugin binaries (whose start-up every
// pod pays); answering an HTTP request with JSON is internal/httpjson.
package jsonutil
