package sqssink

import (
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/cloud-block/cloud-block/common/sink"
)

// authCodes are the codes of refused credentials or permissions, as the
// JSON protocol's error type or the legacy query code the SDK prefers.
// Retrying is right (a key may be rotated or a policy fixed), dead-lettering
// is not: the messages are fine.
var authCodes = map[string]bool{
	"AccessDenied": true, "AccessDeniedException": true,
	"InvalidClientTokenId": true, "UnrecognizedClientException": true,
	"SignatureDoesNotMatch": true, "InvalidSignatureException": true, "IncompleteSignature": true,
	"ExpiredToken": true, "ExpiredTokenException": true,
	"MissingAuthenticationToken": true, "MissingAuthenticationTokenException": true,
}

// contentCodes are the unmodelled codes with which SQS refuses a request
// for what a message holds (too long, a bad character, an empty body).
var contentCodes = map[string]bool{"InvalidParameterValue": true, "MissingParameter": true}

// classify wraps err from an SQS call, marking refused credentials as a
// sink.AuthError. Everything else is left retryable: throttling, 5xx,
// network errors, and queue or KMS key problems an operator can fix.
func classify(op string, err error) error {
	err = fmt.Errorf("sqs: %s: %w", op, err)
	if isAuth(err) {
		return &sink.AuthError{Err: err}
	}
	return err
}

func isAuth(err error) bool {
	var kms *types.KmsAccessDenied
	var sec *types.InvalidSecurity
	if errors.As(err, &kms) || errors.As(err, &sec) {
		return true
	}
	var api smithy.APIError
	return errors.As(err, &api) && authCodes[api.ErrorCode()]
}

// isContent reports whether a whole request was refused for the content of
// its messages; the sink then finds the culprit by sending fewer at a time.
func isContent(err error) bool {
	var inv *types.InvalidMessageContents
	var long *types.BatchRequestTooLong
	var attr *types.InvalidAttributeValue
	if errors.As(err, &inv) || errors.As(err, &long) || errors.As(err, &attr) {
		return true
	}
	var api smithy.APIError
	return errors.As(err, &api) && contentCodes[api.ErrorCode()]
}

// entryError turns one failed SendMessageBatch entry into the error the
// pipeline acts on: the sender's faults (too long, invalid) are permanent,
// except throttling, refused credentials and KMS key trouble, which are not
// the message's fault.
func entryError(f types.BatchResultErrorEntry) error {
	code := deref(f.Code)
	err := fmt.Errorf("sqs: message refused: %s: %s", code, deref(f.Message))
	_, throttled := retry.DefaultThrottleErrorCodes[code]
	switch {
	case authCodes[code] || code == "KMS.AccessDeniedException":
		return &sink.AuthError{Err: err}
	case !f.SenderFault || throttled || strings.HasPrefix(code, "KMS."):
		return err
	}
	return sink.Permanent(err)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
