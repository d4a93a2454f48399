package sqsfake

import (
	"container/list"
	"encoding/base64"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// settings are a queue's configurable attributes. It is a value type so a change can be applied
// to a copy and committed only when every attribute in the request is valid, as SQS does.
type settings struct {
	fifo         bool
	contentDedup bool
	delay        int
	maxSize      int
	retention    int
	waitTime     int
	visibility   int
	// extra holds attributes this server stores and reports back without acting on them.
	extra map[string]string
}

func defaultSettings(fifo bool) settings {
	s := settings{
		fifo:       fifo,
		maxSize:    defaultMaxMessageSize,
		retention:  345600, // 4 days
		visibility: 30,
		extra:      map[string]string{"SqsManagedSseEnabled": "true"},
	}
	if fifo {
		s.extra["DeduplicationScope"] = "queue"
		s.extra["FifoThroughputLimit"] = "perQueue"
	}
	return s
}

// storedOnly are attributes accepted and reported back but without behaviour here.
var storedOnly = map[string]bool{
	"Policy": true, "RedrivePolicy": true, "RedriveAllowPolicy": true, "KmsMasterKeyId": true,
	"KmsDataKeyReusePeriodSeconds": true, "SqsManagedSseEnabled": true,
}

// apply validates attrs and returns the settings with them applied. creating allows FifoQueue,
// which cannot change after creation.
func (s settings) apply(attrs map[string]string, creating bool) (settings, *apiError) {
	out := s
	out.extra = maps.Clone(s.extra)
	// Sorted so that, of several bad attributes, the same one is always reported.
	for _, name := range slices.Sorted(maps.Keys(attrs)) {
		value := attrs[name]
		var err *apiError
		switch name {
		case "DelaySeconds":
			out.delay, err = intAttr(name, value, 0, maxDelaySeconds)
		case "MaximumMessageSize":
			out.maxSize, err = intAttr(name, value, minMaxMessageSize, defaultMaxMessageSize)
		case "MessageRetentionPeriod":
			out.retention, err = intAttr(name, value, 60, 1209600)
		case "ReceiveMessageWaitTimeSeconds":
			out.waitTime, err = intAttr(name, value, 0, maxWaitSeconds)
		case "VisibilityTimeout":
			out.visibility, err = intAttr(name, value, 0, maxVisibilityTimeout)
		case "FifoQueue":
			if !creating {
				return s, errInvalidAttributeName(name)
			}
			var fifo bool
			fifo, err = boolAttr(name, value)
			if err == nil && fifo != s.fifo {
				err = errInvalidParameterValue("The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix and be 1 to 80 in length.")
			}
		case "ContentBasedDeduplication":
			if !s.fifo {
				return s, errInvalidAttributeName(name)
			}
			out.contentDedup, err = boolAttr(name, value)
		case "DeduplicationScope":
			if !s.fifo {
				return s, errInvalidAttributeName(name)
			}
			if value != "queue" && value != "messageGroup" {
				err = errInvalidAttributeValue(name, value, "must be queue or messageGroup")
			}
			out.extra[name] = value
		case "FifoThroughputLimit":
			if !s.fifo {
				return s, errInvalidAttributeName(name)
			}
			if value != "perQueue" && value != "perMessageGroupId" {
				err = errInvalidAttributeValue(name, value, "must be perQueue or perMessageGroupId")
			}
			out.extra[name] = value
		default:
			if !storedOnly[name] {
				return s, errInvalidAttributeName(name)
			}
			out.extra[name] = value
		}
		if err != nil {
			return s, err
		}
	}
	return out, nil
}

func intAttr(name, value string, lo, hi int) (int, *apiError) {
	n, err := strconv.Atoi(value)
	if err != nil || n < lo || n > hi {
		return 0, errInvalidAttributeValue(name, value, fmt.Sprintf("must be an integer from %d to %d", lo, hi))
	}
	return n, nil
}

func boolAttr(name, value string) (bool, *apiError) {
	switch value {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, errInvalidAttributeValue(name, value, "must be true or false")
}

// message is one stored message.
type message struct {
	id        string
	body      string
	md5Body   string
	attrs     map[string]attrValue
	sysAttrs  map[string]attrValue
	groupID   string
	dedupID   string
	seq       string
	senderID  string
	sent      time.Time
	visibleAt time.Time // delayed or in flight until then
	firstRecv time.Time
	receives  int
	receipt   string // the most recent receipt handle; older ones no longer delete
	elem      *list.Element
}

type dedupRecord struct {
	messageID string
	seq       string
	expires   time.Time
}

type queue struct {
	name     string
	arn      string
	settings settings
	created  time.Time
	modified time.Time

	msgs list.List // *message in send order
	byID map[string]*message

	// dedup remembers FIFO deduplication ids for five minutes; dedupOrder holds the keys in
	// insertion order, so expiry (a fixed window) only ever pops from the front.
	dedup      map[string]dedupRecord
	dedupOrder []string
	seq        uint64
}

func newQueue(name, arn string, st settings, now time.Time) *queue {
	return &queue{
		name: name, arn: arn, settings: st, created: now, modified: now,
		byID: map[string]*message{}, dedup: map[string]dedupRecord{},
	}
}

// counts returns how many messages are visible, in flight and delayed.
func (q *queue) counts(now time.Time) (visible, inFlight, delayed int) {
	for e := q.msgs.Front(); e != nil; e = e.Next() {
		m := e.Value.(*message)
		switch {
		case !m.visibleAt.After(now):
			visible++
		case m.receives > 0:
			inFlight++
		default:
			delayed++
		}
	}
	return visible, inFlight, delayed
}

// attribute reports one queue attribute as GetQueueAttributes does.
func (q *queue) attribute(name string, now time.Time) (string, bool) {
	st := q.settings
	switch name {
	case "QueueArn":
		return q.arn, true
	case "ApproximateNumberOfMessages":
		v, _, _ := q.counts(now)
		return strconv.Itoa(v), true
	case "ApproximateNumberOfMessagesNotVisible":
		_, f, _ := q.counts(now)
		return strconv.Itoa(f), true
	case "ApproximateNumberOfMessagesDelayed":
		_, _, d := q.counts(now)
		return strconv.Itoa(d), true
	case "CreatedTimestamp":
		return strconv.FormatInt(q.created.Unix(), 10), true
	case "LastModifiedTimestamp":
		return strconv.FormatInt(q.modified.Unix(), 10), true
	case "DelaySeconds":
		return strconv.Itoa(st.delay), true
	case "MaximumMessageSize":
		return strconv.Itoa(st.maxSize), true
	case "MessageRetentionPeriod":
		return strconv.Itoa(st.retention), true
	case "ReceiveMessageWaitTimeSeconds":
		return strconv.Itoa(st.waitTime), true
	case "VisibilityTimeout":
		return strconv.Itoa(st.visibility), true
	case "FifoQueue":
		return strconv.FormatBool(st.fifo), true
	case "ContentBasedDeduplication":
		return strconv.FormatBool(st.contentDedup), st.fifo
	}
	v, ok := st.extra[name]
	return v, ok
}

// allAttributeNames are the names "All" expands to; FIFO-only ones are added for FIFO queues.
var allAttributeNames = []string{
	"QueueArn", "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
	"ApproximateNumberOfMessagesDelayed", "CreatedTimestamp", "LastModifiedTimestamp",
	"DelaySeconds", "MaximumMessageSize", "MessageRetentionPeriod",
	"ReceiveMessageWaitTimeSeconds", "VisibilityTimeout",
}

// knownAttributeName reports whether GetQueueAttributes may name it.
func knownAttributeName(name string) bool {
	if slices.Contains(allAttributeNames, name) || storedOnly[name] {
		return true
	}
	switch name {
	case "FifoQueue", "ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit":
		return true
	}
	return false
}

func (q *queue) attributes(names []string, now time.Time) map[string]string {
	out := map[string]string{}
	for _, name := range names {
		if name == "All" {
			for _, n := range allAttributeNames {
				out[n], _ = q.attribute(n, now)
			}
			maps.Copy(out, q.settings.extra)
			if q.settings.fifo {
				out["FifoQueue"] = "true"
				out["ContentBasedDeduplication"] = strconv.FormatBool(q.settings.contentDedup)
			}
			continue
		}
		if v, ok := q.attribute(name, now); ok {
			out[name] = v
		}
	}
	return out
}

// dedupKey scopes a deduplication id as the queue's DeduplicationScope says.
func (q *queue) dedupKey(groupID, dedupID string) string {
	if q.settings.extra["DeduplicationScope"] == "messageGroup" {
		return groupID + "\x00" + dedupID
	}
	return dedupID
}

// expireDedup forgets deduplication ids older than the five-minute window.
func (q *queue) expireDedup(now time.Time) {
	i := 0
	for ; i < len(q.dedupOrder); i++ {
		k := q.dedupOrder[i]
		if q.dedup[k].expires.After(now) {
			break
		}
		delete(q.dedup, k)
	}
	q.dedupOrder = q.dedupOrder[i:]
}

// expireRetention drops messages kept longer than MessageRetentionPeriod.
func (q *queue) expireRetention(now time.Time) {
	limit := now.Add(-time.Duration(q.settings.retention) * time.Second)
	for e := q.msgs.Front(); e != nil; {
		next := e.Next()
		if m := e.Value.(*message); m.sent.Before(limit) {
			q.remove(m)
		}
		e = next
	}
}

func (q *queue) remove(m *message) {
	q.msgs.Remove(m.elem)
	delete(q.byID, m.id)
}

func (q *queue) purge() {
	q.msgs.Init()
	q.byID = map[string]*message{}
}

// receive takes up to max visible messages, makes them invisible for visibility and returns them.
// In a FIFO queue a message group is blocked while any earlier message of it is in flight (or
// still delayed), so a group is always delivered in order and one batch at a time.
func (q *queue) receive(max int, visibility time.Duration, now time.Time) []*message {
	var out []*message
	var blocked map[string]bool
	for e := q.msgs.Front(); e != nil && len(out) < max; e = e.Next() {
		m := e.Value.(*message)
		if m.visibleAt.After(now) {
			if q.settings.fifo {
				if blocked == nil {
					blocked = map[string]bool{}
				}
				blocked[m.groupID] = true
			}
			continue
		}
		if q.settings.fifo && blocked[m.groupID] {
			continue
		}
		out = append(out, m)
	}
	for _, m := range out {
		m.receives++
		if m.receives == 1 {
			m.firstRecv = now
		}
		m.visibleAt = now.Add(visibility)
		m.receipt = encodeReceipt(q.name, m.id, m.receives, randomHex())
	}
	return out
}

// nextChange is when a message not visible now becomes visible, if any.
func (q *queue) nextChange(now time.Time) (time.Time, bool) {
	var next time.Time
	for e := q.msgs.Front(); e != nil; e = e.Next() {
		m := e.Value.(*message)
		if m.visibleAt.After(now) && (next.IsZero() || m.visibleAt.Before(next)) {
			next = m.visibleAt
		}
	}
	return next, !next.IsZero()
}

// Receipt handles are opaque to clients; here they name the queue, the message and the receive
// they came from, so a handle from an earlier receive can be told from the current one without
// keeping every handle ever issued.
func encodeReceipt(queue, msgID string, receives int, nonce string) string {
	raw := strings.Join([]string{queue, msgID, strconv.Itoa(receives), nonce}, "\n")
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

func decodeReceipt(handle string) (queue, msgID string, ok bool) {
	raw, err := base64.RawURLEncoding.DecodeString(handle)
	if err != nil {
		return "", "", false
	}
	parts := strings.Split(string(raw), "\n")
	if len(parts) != 4 {
		return "", "", false
	}
	return parts[0], parts[1], true
}
