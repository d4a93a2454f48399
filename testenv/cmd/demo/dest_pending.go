package main

import (
	"context"
	"fmt"
)

type pending struct{ name string }

func (p pending) Describe() string  { return p.name }
func (p pending) Helpers() []string { return nil }
func (p pending) Start(context.Context, *demo) ([]string, error) {
	return nil, fmt.Errorf("%w: the demo for %s is not written yet", errUnavailable, p.name)
}
func (p pending) Peek(context.Context) ([]arrival, error) { return nil, nil }
func (p pending) Stop()                                   {}

type ehDest struct{ pending }
type blobDest struct{ pending }
type pubsubDest struct{ pending }
type gcsDest struct{ pending }
