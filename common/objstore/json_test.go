package objstore

import (
	"encoding/json"
	"strings"
	"testing"
)

var jsonCases = []string{
	`{}`, `[]`, `""`, `0`, `-0`, `1.5e-3`, `-12.0E+7`, `true`, `false`, `null`,
	` {"a" : [1, {"b":null}, "x\"\\\/\b\f\n\r\t\u00e9"]} `, "\t\r\n[\n1\n]\r\n",
	`{"a":1,"b":[true,false]}`, `"\ud800"`, "\"\xff\"",
	``, ` `, `{`, `}`, `[`, `]`, `[1,]`, `{"a":1,}`, `{"a"}`, `{"a":}`, `{a:1}`, `{"a" 1}`, `[1 2]`,
	`01`, `-`, `1.`, `.5`, `1e`, `1e+`, `+1`, `0x1`, `NaN`, `tru`, `nulls`, `1 2`, `"a`, `"\x"`, `"\u12"`,
	`"\u12g4"`, "\"\x01\"", "\"tab\there\"", `[1]]`, `{"a":1}}`, `{"a":[}`, `[{]}`, "\u00a01", "\ufeff1",
	`{"a":1 "b":2}`, `{,}`, `[,1]`, `{"":0}`, `[[[]]]`, `"\/"`,
}

func TestValidJSON(t *testing.T) {
	for _, c := range jsonCases {
		if got, want := validJSON([]byte(c)), json.Valid([]byte(c)); got != want {
			t.Errorf("validJSON(%q) = %v, json.Valid says %v", c, got, want)
		}
	}
	for _, depth := range []int{maxDepth, maxDepth + 1} {
		c := []byte(strings.Repeat("[", depth) + strings.Repeat("]", depth))
		if got, want := validJSON(c), json.Valid(c); got != want {
			t.Errorf("depth %d: validJSON %v, json.Valid %v", depth, got, want)
		}
	}
}

// FuzzValidJSON holds validJSON to json.Valid.
func FuzzValidJSON(f *testing.F) {
	for _, c := range jsonCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		if got, want := validJSON(p), json.Valid(p); got != want {
			t.Fatalf("validJSON(%q) = %v, json.Valid says %v", p, got, want)
		}
	})
}
