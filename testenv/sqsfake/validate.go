package sqsfake

import (
	"regexp"
	"strings"
	"time"
)

// Service limits, as documented for SQS (the 1 MiB message and batch payload limit is the one in
// force since 2025; it used to be 256 KiB).
const (
	maxBatchEntries       = 10
	maxBatchEntryID       = 80
	maxBatchBytes         = 1 << 20
	defaultMaxMessageSize = 1 << 20
	minMaxMessageSize     = 1024
	maxMessageAttributes  = 10
	maxAttributeName      = 256
	maxQueueName          = 80
	maxGroupOrDedupID     = 128
	maxDelaySeconds       = 900
	maxWaitSeconds        = 20
	maxVisibilityTimeout  = 43200
	maxReceiveMessages    = 10
	dedupWindow           = 5 * time.Minute
)

// allowedRune reports whether SQS accepts r in a message body: the XML 1.0 character set.
func allowedRune(r rune) bool {
	switch {
	case r == 0x9 || r == 0xA || r == 0xD:
		return true
	case r >= 0x20 && r <= 0xD7FF:
		return true
	case r >= 0xE000 && r <= 0xFFFD:
		return true
	case r >= 0x10000 && r <= 0x10FFFF:
		return true
	}
	return false
}

// firstBadRune returns the first rune SQS would refuse, and whether there is one.
func firstBadRune(s string) (rune, bool) {
	for _, r := range s {
		if !allowedRune(r) {
			return r, true
		}
	}
	return 0, false
}

func validBatchEntryID(id string) bool {
	if id == "" || len(id) > maxBatchEntryID {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !isAlnum(c) && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// validQueueName checks the base name (without a ".fifo" suffix the caller has already removed):
// alphanumerics, hyphens and underscores. The 80-character limit counts the suffix.
func validQueueName(full, base string) bool {
	if base == "" || len(full) > maxQueueName {
		return false
	}
	for i := 0; i < len(base); i++ {
		c := base[i]
		if !isAlnum(c) && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// validateGroupOrDedupID checks a MessageGroupId or MessageDeduplicationId: 1 to 128 characters,
// alphanumerics and ASCII punctuation.
func validateGroupOrDedupID(param, v string) *apiError {
	if v == "" || len(v) > maxGroupOrDedupID {
		return errInvalidParameterValue("Value %s for parameter %s is invalid. Reason: it must be 1 to %d characters long.", v, param, maxGroupOrDedupID)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < '!' || c > '~' {
			return errInvalidParameterValue("Value %s for parameter %s is invalid. Reason: it may contain only alphanumeric characters and punctuation.", v, param)
		}
	}
	return nil
}

// numberPattern is the decimal notation SQS accepts for a Number attribute.
var numberPattern = regexp.MustCompile(`^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$`)

// validateMessageAttributes enforces the rules on user message attributes: how many, their names,
// their data types and that each carries a non-empty value of its type.
func validateMessageAttributes(attrs map[string]attrValue) *apiError {
	if len(attrs) > maxMessageAttributes {
		return errInvalidParameterValue("Number of message attributes [%d] exceeds the allowed maximum [%d].", len(attrs), maxMessageAttributes)
	}
	for name, v := range attrs {
		if !validAttributeName(name) {
			return errInvalidParameterValue("Message (user) attribute name '%s' is invalid. The name may contain only alphanumerics, hyphens, underscores and periods, must not start with AWS. or Amazon., and must not start or end with a period nor contain two in a row.", name)
		}
		if err := validateAttributeValue("Message (user)", name, v); err != nil {
			return err
		}
	}
	return nil
}

// validateSystemAttributes enforces the only system attribute a sender may set: AWSTraceHeader,
// a String.
func validateSystemAttributes(attrs map[string]attrValue) *apiError {
	for name, v := range attrs {
		if name != "AWSTraceHeader" {
			return errInvalidParameterValue("Message system attribute name '%s' is invalid.", name)
		}
		if v.DataType != "String" {
			return errInvalidParameterValue("The type of message system attribute '%s' is invalid: it must be String.", name)
		}
		if err := validateAttributeValue("Message system", name, v); err != nil {
			return err
		}
	}
	return nil
}

func validAttributeName(name string) bool {
	if name == "" || len(name) > maxAttributeName {
		return false
	}
	lower := strings.ToLower(name)
	if strings.HasPrefix(lower, "aws.") || strings.HasPrefix(lower, "amazon.") {
		return false
	}
	if name[0] == '.' || name[len(name)-1] == '.' || strings.Contains(name, "..") {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

func validateAttributeValue(kind, name string, v attrValue) *apiError {
	base := baseType(v.DataType)
	if base != "String" && base != "Number" && base != "Binary" || len(v.DataType) > maxAttributeName {
		return errInvalidParameterValue("The type of %s attribute '%s' is invalid. You must use only the following supported type prefixes: Binary, Number, String.", kind, name)
	}
	switch base {
	case "Binary":
		if len(v.BinaryValue) == 0 {
			return errInvalidParameterValue("%s attribute '%s' must contain a non-empty value of type 'Binary'.", kind, name)
		}
	default:
		s := v.stringValue()
		if s == "" {
			return errInvalidParameterValue("%s attribute '%s' must contain a non-empty value of type '%s'.", kind, name, base)
		}
		if r, bad := firstBadRune(s); bad {
			return errInvalidParameterValue("%s attribute '%s' contains the invalid character '#x%X'.", kind, name, r)
		}
		if base == "Number" && !numberPattern.MatchString(s) {
			return errInvalidParameterValue("Can't cast the value of %s attribute '%s' to a number.", kind, name)
		}
	}
	return nil
}

// messageSize is the size SQS holds against MaximumMessageSize: the body plus every attribute's
// name, data type and value.
func messageSize(e *sendEntry) int {
	var n int
	if e.MessageBody != nil {
		n = len(*e.MessageBody)
	}
	for name, v := range e.MessageAttributes {
		n += v.size(name)
	}
	return n
}
