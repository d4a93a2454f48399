package config

import "testing"

func TestValidHostPort(t *testing.T) {
	for s, want := range map[string]bool{
		"localhost:8085": true, "127.0.0.1:1": true, "[::1]:65535": true, "pubsub-emulator:8681": true,
		"emu.example.com:443": true,
		"not a host:port":     false, "localhost": false, ":8085": false, "localhost:0": false, "localhost:65536": false,
		"localhost:08085": false, "host:port": false, "[zz]:80": false, "-bad:80": false, "a b:80": false,
		"http://localhost:80": false,
	} {
		if got := ValidHostPort(s); got != want {
			t.Errorf("ValidHostPort(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestHostPortWithSchemes(t *testing.T) {
	env := map[string]string{"A": "http://localhost:4443", "B": "https://h:1/path", "C": "ftp://h:1", "D": "h:1", "E": "localhost"}
	l := NewLoader(func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		[]Var{{Name: "A"}, {Name: "B"}, {Name: "C"}, {Name: "D"}, {Name: "E"}})
	if got := l.HostPort("A", "http", "https"); got != "http://localhost:4443" {
		t.Errorf("A: %q", got)
	}
	if got := l.HostPort("D", "http", "https"); got != "h:1" {
		t.Errorf("D: %q", got)
	}
	for _, name := range []string{"B", "C", "E"} {
		if got := l.HostPort(name, "http", "https"); got != "" {
			t.Errorf("%s: %q accepted", name, got)
		}
	}
	if n := len(l.errs); n != 3 {
		t.Errorf("%d problems recorded, want 3: %v", n, l.Err())
	}
}

func TestValidAWSRegion(t *testing.T) {
	for s, want := range map[string]bool{
		"eu-west-1": true, "us-gov-east-1": true, "cn-north-1": true, "ap-southeast-5": true,
		"Not A Region!": false, "EU-WEST-1": false, "euwest1": false, "-eu-west-1": false, "eu-west-1-": false, "": false,
	} {
		if got := ValidAWSRegion(s); got != want {
			t.Errorf("ValidAWSRegion(%q) = %v, want %v", s, got, want)
		}
	}
}
