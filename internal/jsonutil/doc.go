// Package jsonutil holds the two JSON helpers several berth components had a copy of: encoding
// a value that cannot fail to encode, and answering an HTTP request with JSON. It imports only
// the standard library and may be imported by any berth package.
package jsonutil
