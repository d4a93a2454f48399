package sqsfake

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

func (s *Server) createQueue(req *request) (any, *apiError) {
	var in createQueueInput
	if err := req.decode(&in); err != nil {
		return nil, err
	}
	if in.QueueName == "" {
		return nil, errMissingParameter("QueueName")
	}
	base, fifo := strings.CutSuffix(in.QueueName, ".fifo")
	if !validQueueName(in.QueueName, base) {
		return nil, errInvalidParameterValue("Can only include alphanumeric characters, hyphens, or underscores. 1 to %d in length.", maxQueueName)
	}
	if fifo && in.Attributes["FifoQueue"] != "true" {
		return nil, errInvalidParameterValue("The name of a standard queue cannot end with .fifo; set the FifoQueue attribute to create a FIFO queue.")
	}
	st, err := defaultSettings(fifo).apply(in.Attributes, true)
	if err != nil {
		return nil, err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	arn := fmt.Sprintf("arn:aws:sqs:%s:%s:%s", req.region, AccountID, in.QueueName)
	fresh := newQueue(in.QueueName, arn, st, now)
	if q, ok := s.queues[in.QueueName]; ok {
		// Creating an existing queue is idempotent only if every attribute given matches.
		for _, name := range slices.Sorted(maps.Keys(in.Attributes)) {
			have, _ := q.attribute(name, now)
			want, _ := fresh.attribute(name, now)
			if have != want {
				return nil, errQueueNameExists(name)
			}
		}
		return queueURLOutput{req.queueURL(q.name)}, nil
	}
	s.queues[in.QueueName] = fresh
	return queueURLOutput{req.queueURL(in.QueueName)}, nil
}

func (s *Server) getQueueURL(req *request) (any, *apiError) {
	var in getQueueURLInput
	if err := req.decode(&in); err != nil {
		return nil, err
	}
	if in.QueueName == "" {
		return nil, errMissingParameter("QueueName")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.queues[in.QueueName]; !ok || in.QueueOwnerAWSAccountId != "" && in.QueueOwnerAWSAccountId != AccountID {
		return nil, errQueueDoesNotExist()
	}
	return queueURLOutput{req.queueURL(in.QueueName)}, nil
}

func (s *Server) getQueueAttributes(req *request) (any, *apiError) {
	var in getQueueAttributesInput
	if err := req.decode(&in); err != nil {
		return nil, err
	}
	for _, name := range in.AttributeNames {
		if name != "All" && !knownAttributeName(name) {
			return nil, errInvalidAttributeName(name)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := s.lookup(in.QueueUrl)
	if err != nil {
		return nil, err
	}
	now := s.now()
	q.expireRetention(now)
	return attributesOutput{q.attributes(in.AttributeNames, now)}, nil
}

func (s *Server) setQueueAttributes(req *request) (any, *apiError) {
	var in setQueueAttributesInput
	if err := req.decode(&in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := s.lookup(in.QueueUrl)
	if err != nil {
		return nil, err
	}
	st, err := q.settings.apply(in.Attributes, false)
	if err != nil {
		return nil, err
	}
	q.settings = st
	q.modified = s.now()
	return struct{}{}, nil
}

func (s *Server) listQueues(req *request) (any, *apiError) {
	var in listQueuesInput
	if err := req.decode(&in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out listQueuesOutput
	for _, name := range slices.Sorted(maps.Keys(s.queues)) {
		if strings.HasPrefix(name, in.QueueNamePrefix) {
			out.QueueUrls = append(out.QueueUrls, req.queueURL(name))
		}
	}
	return out, nil
}

func (s *Server) deleteQueue(req *request) (any, *apiError) {
	var in queueInput
	if err := req.decode(&in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := s.lookup(in.QueueUrl)
	if err != nil {
		return nil, err
	}
	delete(s.queues, q.name)
	s.wakeAll()
	return struct{}{}, nil
}

func (s *Server) purgeQueue(req *request) (any, *apiError) {
	var in queueInput
	if err := req.decode(&in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := s.lookup(in.QueueUrl)
	if err != nil {
		return nil, err
	}
	q.purge()
	return struct{}{}, nil
}

func (s *Server) sendMessage(req *request) (any, *apiError) {
	var in sendMessageInput
	if err := req.decode(&in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.SendMessageCalls++
	q, err := s.lookup(in.QueueUrl)
	if err != nil {
		return nil, err
	}
	return s.enqueue(q, &in.sendEntry, req.accessKey)
}

// checkBatch enforces the rules every batch action shares: 1 to 10 entries, each id made of
// alphanumerics, hyphens and underscores, no id twice.
func checkBatch(ids []string, entryName string) *apiError {
	switch {
	case len(ids) == 0:
		return errEmptyBatch(entryName)
	case len(ids) > maxBatchEntries:
		return errTooManyEntries(len(ids))
	}
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if !validBatchEntryID(id) {
			return errInvalidBatchEntryID(id)
		}
		if seen[id] {
			return errIdsNotDistinct(id)
		}
		seen[id] = true
	}
	return nil
}

func (s *Server) sendMessageBatch(req *request) (any, *apiError) {
	var in sendMessageBatchInput
	if err := req.decode(&in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.SendMessageBatchCalls++
	q, err := s.lookup(in.QueueUrl)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(in.Entries))
	total := 0
	for i := range in.Entries {
		ids[i] = in.Entries[i].Id
		total += messageSize(&in.Entries[i])
	}
	if err := checkBatch(ids, "SendMessageBatchRequestEntry"); err != nil {
		return nil, err
	}
	if total > maxBatchBytes {
		return nil, errBatchTooLong(total)
	}

	out := sendMessageBatchOutput{Successful: []sendResult{}, Failed: []batchError{}}
	for i := range in.Entries {
		e := &in.Entries[i]
		if s.failNext > 0 {
			s.failNext--
			s.stats.EntriesFailed++
			out.Failed = append(out.Failed, batchError{Id: e.Id, SenderFault: false, Code: "InternalError",
				Message: "The request processing has failed because of an unknown error, exception or failure."})
			continue
		}
		res, err := s.enqueue(q, e, req.accessKey)
		if err != nil {
			s.stats.EntriesFailed++
			out.Failed = append(out.Failed, batchError{Id: e.Id, SenderFault: !err.server, Code: err.queryCode, Message: err.message})
			continue
		}
		res.Id = e.Id
		out.Successful = append(out.Successful, res)
	}
	return out, nil
}

// enqueue validates one message and stores it; s.mu must be held. Its errors are the request's
// error for SendMessage and the entry's failure in a batch.
func (s *Server) enqueue(q *queue, e *sendEntry, sender string) (sendResult, *apiError) {
	st := q.settings
	if e.MessageBody == nil || *e.MessageBody == "" {
		return sendResult{}, errMissingParameter("MessageBody")
	}
	body := *e.MessageBody
	delay := st.delay
	if e.DelaySeconds != nil {
		d := *e.DelaySeconds
		if d < 0 || d > maxDelaySeconds {
			return sendResult{}, errInvalidParameterValue("Value %d for parameter DelaySeconds is invalid. Reason: must be between 0 and %d, if provided.", d, maxDelaySeconds)
		}
		if st.fifo && d != 0 {
			return sendResult{}, errInvalidParameterValue("Value %d for parameter DelaySeconds is invalid. Reason: The request include parameter that is not valid for this queue type.", d)
		}
		delay = int(d)
	}
	if err := validateMessageAttributes(e.MessageAttributes); err != nil {
		return sendResult{}, err
	}
	if err := validateSystemAttributes(e.MessageSystemAttributes); err != nil {
		return sendResult{}, err
	}
	if r, bad := firstBadRune(body); bad {
		return sendResult{}, errInvalidMessageContents(r)
	}
	if messageSize(e) > st.maxSize {
		return sendResult{}, errMessageTooLong(st.maxSize)
	}

	var groupID, dedupID string
	if e.MessageGroupId != nil {
		groupID = *e.MessageGroupId
		if err := validateGroupOrDedupID("MessageGroupId", groupID); err != nil {
			return sendResult{}, err
		}
	}
	if e.MessageDeduplicationId != nil {
		if !st.fifo {
			return sendResult{}, errInvalidParameterValue("Value %s for parameter MessageDeduplicationId is invalid. Reason: The request include parameter that is not valid for this queue type.", *e.MessageDeduplicationId)
		}
		dedupID = *e.MessageDeduplicationId
		if err := validateGroupOrDedupID("MessageDeduplicationId", dedupID); err != nil {
			return sendResult{}, err
		}
	}
	if st.fifo {
		if e.MessageGroupId == nil {
			return sendResult{}, errMissingParameter("MessageGroupId")
		}
		if dedupID == "" {
			if !st.contentDedup {
				return sendResult{}, errInvalidParameterValue("The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly")
			}
			sum := sha256.Sum256([]byte(body))
			dedupID = hex.EncodeToString(sum[:])
		}
	}

	res := sendResult{
		MD5OfMessageBody:             md5Hex(body),
		MD5OfMessageAttributes:       md5OfAttributes(e.MessageAttributes),
		MD5OfMessageSystemAttributes: md5OfAttributes(e.MessageSystemAttributes),
	}
	now := s.now()
	var key string
	if st.fifo {
		q.expireDedup(now)
		key = q.dedupKey(groupID, dedupID)
		if rec, ok := q.dedup[key]; ok {
			// A duplicate inside the window is accepted and answered like the original, but
			// not stored again.
			s.stats.DuplicatesDropped++
			res.MessageId, res.SequenceNumber = rec.messageID, rec.seq
			return res, nil
		}
	}

	m := &message{
		id:        newUUID(),
		body:      body,
		md5Body:   res.MD5OfMessageBody,
		attrs:     e.MessageAttributes,
		sysAttrs:  e.MessageSystemAttributes,
		groupID:   groupID,
		dedupID:   dedupID,
		senderID:  sender,
		sent:      now,
		visibleAt: now.Add(time.Duration(delay) * time.Second),
	}
	if st.fifo {
		q.seq++
		// Real sequence numbers are large, increasing and not consecutive; 20 digits keeps
		// their shape and their string order.
		m.seq = fmt.Sprintf("%020d", q.seq)
		q.dedup[key] = dedupRecord{messageID: m.id, seq: m.seq, expires: now.Add(dedupWindow)}
		q.dedupOrder = append(q.dedupOrder, key)
	}
	m.elem = q.msgs.PushBack(m)
	q.byID[m.id] = m
	s.stats.MessagesEnqueued++
	s.wakeAll()

	res.MessageId, res.SequenceNumber = m.id, m.seq
	return res, nil
}

// systemAttributeNames are the names "All" expands to in ReceiveMessage.
var systemAttributeNames = []string{
	"SenderId", "SentTimestamp", "ApproximateReceiveCount", "ApproximateFirstReceiveTimestamp",
	"SequenceNumber", "MessageDeduplicationId", "MessageGroupId", "AWSTraceHeader",
}

func intParam(name string, v *int64, def, lo, hi int) (int, *apiError) {
	if v == nil {
		return def, nil
	}
	if *v < int64(lo) || *v > int64(hi) {
		return 0, errInvalidParameterValue("Value %d for parameter %s is invalid. Reason: Must be between %d and %d, if provided.", *v, name, lo, hi)
	}
	return int(*v), nil
}

func (s *Server) receiveMessage(req *request) (any, *apiError) {
	var in receiveMessageInput
	if err := req.decode(&in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.stats.ReceiveMessageCalls++
	q, err := s.lookup(in.QueueUrl)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	st := q.settings
	s.mu.Unlock()

	maxMsgs, err := intParam("MaxNumberOfMessages", in.MaxNumberOfMessages, 1, 1, maxReceiveMessages)
	if err != nil {
		return nil, err
	}
	visibility, err := intParam("VisibilityTimeout", in.VisibilityTimeout, st.visibility, 0, maxVisibilityTimeout)
	if err != nil {
		return nil, err
	}
	wait, err := intParam("WaitTimeSeconds", in.WaitTimeSeconds, st.waitTime, 0, maxWaitSeconds)
	if err != nil {
		return nil, err
	}
	sysNames := map[string]bool{}
	for _, n := range slices.Concat(in.AttributeNames, in.MessageSystemAttributeNames) {
		if n == "All" {
			for _, a := range systemAttributeNames {
				sysNames[a] = true
			}
		}
		sysNames[n] = true
	}

	// Long poll: look, and if nothing is there, sleep until something changes, the next
	// invisible message turns visible, the wait is over or the caller gives up.
	ctx := req.r.Context()
	deadline := time.Now().Add(time.Duration(wait) * time.Second)
	for {
		s.mu.Lock()
		if s.down {
			s.stats.Refused++
			s.mu.Unlock()
			return nil, errServiceUnavailable()
		}
		if s.queues[q.name] != q {
			s.mu.Unlock()
			return nil, errQueueDoesNotExist()
		}
		if ctx.Err() != nil {
			// The caller has gone; taking messages now would only hide them from others.
			s.mu.Unlock()
			return receiveMessageOutput{}, nil
		}
		now := s.now()
		q.expireRetention(now)
		got := q.receive(maxMsgs, time.Duration(visibility)*time.Second, now)
		remaining := time.Until(deadline)
		if len(got) > 0 || remaining <= 0 || s.closed {
			out := receiveMessageOutput{}
			for _, m := range got {
				out.Messages = append(out.Messages, wireMessageOf(m, sysNames, in.MessageAttributeNames))
			}
			s.mu.Unlock()
			return out, nil
		}
		if next, ok := q.nextChange(now); ok && next.Sub(now) < remaining {
			remaining = next.Sub(now)
		}
		wake := s.wake
		s.waiting++
		s.mu.Unlock()

		timer := time.NewTimer(remaining)
		select {
		case <-wake:
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
		s.mu.Lock()
		s.waiting--
		s.mu.Unlock()
	}
}

// wireMessageOf renders a received message with the system attributes asked for and the message
// attributes selected by names ("All", ".*", "prefix.*" or exact names). MD5OfMessageAttributes
// covers the attributes returned, so a client can check what it got.
func wireMessageOf(m *message, sysNames map[string]bool, names []string) wireMessage {
	w := wireMessage{MessageId: m.id, ReceiptHandle: m.receipt, MD5OfBody: m.md5Body, Body: m.body}
	attrs := map[string]string{}
	add := func(name, value string) {
		if sysNames[name] && value != "" {
			attrs[name] = value
		}
	}
	add("SenderId", m.senderID)
	add("SentTimestamp", strconv.FormatInt(m.sent.UnixMilli(), 10))
	add("ApproximateReceiveCount", strconv.Itoa(m.receives))
	add("ApproximateFirstReceiveTimestamp", strconv.FormatInt(m.firstRecv.UnixMilli(), 10))
	add("SequenceNumber", m.seq)
	add("MessageDeduplicationId", m.dedupID)
	add("MessageGroupId", m.groupID)
	if tr, ok := m.sysAttrs["AWSTraceHeader"]; ok {
		add("AWSTraceHeader", tr.stringValue())
	}
	if len(attrs) > 0 {
		w.Attributes = attrs
	}

	selected := map[string]attrValue{}
	for name, v := range m.attrs {
		if attributeSelected(name, names) {
			selected[name] = v
		}
	}
	if len(selected) > 0 {
		w.MessageAttributes = selected
		w.MD5OfMessageAttributes = md5OfAttributes(selected)
	}
	return w
}

func attributeSelected(name string, patterns []string) bool {
	for _, p := range patterns {
		switch {
		case p == "All" || p == ".*":
			return true
		case strings.HasSuffix(p, ".*"):
			if strings.HasPrefix(name, strings.TrimSuffix(p, "*")) {
				return true
			}
		case p == name:
			return true
		}
	}
	return false
}

// message finds the message a receipt handle was issued for; s.mu must be held. current is false
// when the handle is from an earlier receive than the latest, which SQS accepts but ignores.
func (q *queue) message(handle string) (m *message, current bool, err *apiError) {
	qname, id, ok := decodeReceipt(handle)
	if !ok || qname != q.name {
		return nil, false, errReceiptHandleInvalid(handle)
	}
	m = q.byID[id]
	return m, m != nil && m.receipt == handle, nil
}

func (s *Server) deleteMessage(req *request) (any, *apiError) {
	var in receiptInput
	if err := req.decode(&in); err != nil {
		return nil, err
	}
	if in.ReceiptHandle == "" {
		return nil, errMissingParameter("ReceiptHandle")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := s.lookup(in.QueueUrl)
	if err != nil {
		return nil, err
	}
	if err := s.deleteOne(q, in.ReceiptHandle); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// deleteOne deletes the message a receipt handle names. Deleting with a stale handle, or a message
// already deleted, succeeds without effect, as SQS documents.
func (s *Server) deleteOne(q *queue, handle string) *apiError {
	m, current, err := q.message(handle)
	if err != nil {
		return err
	}
	if current {
		q.remove(m)
		s.stats.MessagesDeleted++
	}
	return nil
}

func (s *Server) deleteMessageBatch(req *request) (any, *apiError) {
	var in receiptBatchInput
	if err := req.decode(&in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := s.lookup(in.QueueUrl)
	if err != nil {
		return nil, err
	}
	return s.receiptBatch(in.Entries, "DeleteMessageBatchRequestEntry", func(e receiptEntry) *apiError {
		return s.deleteOne(q, e.ReceiptHandle)
	})
}

func (s *Server) receiptBatch(entries []receiptEntry, entryName string, do func(receiptEntry) *apiError) (any, *apiError) {
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.Id
	}
	if err := checkBatch(ids, entryName); err != nil {
		return nil, err
	}
	out := receiptBatchOutput{Successful: []batchID{}, Failed: []batchError{}}
	for _, e := range entries {
		if err := do(e); err != nil {
			out.Failed = append(out.Failed, batchError{Id: e.Id, SenderFault: !err.server, Code: err.queryCode, Message: err.message})
			continue
		}
		out.Successful = append(out.Successful, batchID{e.Id})
	}
	return out, nil
}

func (s *Server) changeMessageVisibility(req *request) (any, *apiError) {
	var in receiptInput
	if err := req.decode(&in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := s.lookup(in.QueueUrl)
	if err != nil {
		return nil, err
	}
	if err := s.changeVisibility(q, in.ReceiptHandle, in.VisibilityTimeout); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (s *Server) changeMessageVisibilityBatch(req *request) (any, *apiError) {
	var in receiptBatchInput
	if err := req.decode(&in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := s.lookup(in.QueueUrl)
	if err != nil {
		return nil, err
	}
	return s.receiptBatch(in.Entries, "ChangeMessageVisibilityBatchRequestEntry", func(e receiptEntry) *apiError {
		return s.changeVisibility(q, e.ReceiptHandle, e.VisibilityTimeout)
	})
}

// changeVisibility sets a new visibility timeout, counted from now, on a message in flight.
func (s *Server) changeVisibility(q *queue, handle string, timeout *int64) *apiError {
	if handle == "" {
		return errMissingParameter("ReceiptHandle")
	}
	if timeout == nil {
		return errMissingParameter("VisibilityTimeout")
	}
	secs, err := intParam("VisibilityTimeout", timeout, 0, 0, maxVisibilityTimeout)
	if err != nil {
		return err
	}
	m, current, err := q.message(handle)
	if err != nil {
		return err
	}
	now := s.now()
	if !current || !m.visibleAt.After(now) {
		return errMessageNotInflight()
	}
	m.visibleAt = now.Add(time.Duration(secs) * time.Second)
	s.wakeAll()
	return nil
}
