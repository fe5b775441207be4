package httpjson

import (
	"net/http/httptest"
	"testing"
)

func TestWrite(t *testing.T) {
	rec := httptest.NewRecorder()
	Write(rec, []string{"x"})
	if rec.Header().Get("Content-Type") != "application/json" || rec.Body.String() != "[\"x\"]\n" {
		t.Fatalf("got %q %q", rec.Header().Get("Content-Type"), rec.Body.String())
	}
}
