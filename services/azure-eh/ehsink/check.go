package ehsink

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/cloud-block/cloud-block/common/sink"
)

// Check reports what Connect proved: it opened a sender link to the hub,
// which takes the Send claim the block needs, and learned the hub's size
// limit. It then reads the hub's properties (GetEventHubProperties),
// which a policy or role that may only send cannot (it needs Listen): a
// warning then, as the block does without them. No test event is sent: it
// would reach the hub's consumers.
func (s *Sink) Check(ctx context.Context, opt sink.CheckOptions) ([]sink.Finding, error) {
	s.mu.Lock()
	p, lim := s.p, s.lim
	s.mu.Unlock()
	if p == nil {
		return nil, errors.New("event hubs: not connected")
	}
	fs := []sink.Finding{{Text: fmt.Sprintf("event hub %s took a sender link (events of up to %d bytes)", s.where, lim.MaxMessageBytes)}}
	props, err := p.GetEventHubProperties(ctx, nil)
	if err != nil {
		err = s.failure("reading the properties of "+s.where, err, 0)
		if !sink.IsAuth(err) {
			return fs, err
		}
		fs = append(fs, sink.Finding{Warn: true, Text: fmt.Sprintf(
			"the credential may not read the hub's properties (GetEventHubProperties needs the Listen claim), which the block does without: %v", err)})
	} else {
		fs = append(fs, sink.Finding{Text: fmt.Sprintf("event hub %s answered GetEventHubProperties: partitions %s", s.where, strings.Join(props.PartitionIDs, ", "))})
	}
	if opt.Write {
		fs = append(fs, sink.Finding{Warn: true, Text: "--write sends no test event: it would reach the hub's consumers"})
	}
	return fs, nil
}
