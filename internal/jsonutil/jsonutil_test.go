package jsonutil

import (
	"strings"
	"testing"
)

func TestMustMarshalPanicsNamingTheType(t *testing.T) {
	if got := string(MustMarshal(map[string]int{"a": 1})); got != `{"a":1}` {
		t.Fatalf("got %s", got)
	}
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "chan int") {
			t.Fatalf("want a panic naming chan int, got %v", r)
		}
	}()
	MustMarshal(make(chan int))
}
