package blocktest

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if lost := Summary(os.Stdout); lost > 0 {
		fmt.Printf("FAIL: %d messages lost\n", lost)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// TestBlock runs the suite for every target at once (BLOCKTEST_TARGETS:
// some of them, by target or service name), at the Small scale unless
// BLOCKTEST_SCALE=full; the BLOCKTEST_* variables of ScaleFromEnv adjust it.
func TestBlock(t *testing.T) {
	if testing.Short() {
		t.Skip("the block suite runs the binaries against Mosquitto and the emulators")
	}
	base := Small
	switch s := os.Getenv("BLOCKTEST_SCALE"); s {
	case "", "small":
	case "full":
		base = Full
	default:
		t.Fatalf("BLOCKTEST_SCALE=%q: want small or full", s)
	}
	sc := ScaleFromEnv(base)
	names := Targets()
	if want := os.Getenv("BLOCKTEST_TARGETS"); want != "" {
		names = nil
		for _, w := range strings.Split(want, ",") {
			w = strings.TrimSpace(w)
			if svc := ForService(w); len(svc) > 0 {
				names = append(names, svc...)
			} else {
				names = append(names, w)
			}
		}
	}
	startShared(t, names)
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(name, func(t *testing.T) { Run(t, name, sc) })
		}()
	}
	wg.Wait()
}
