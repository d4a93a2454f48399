package sqsfake

import (
	"fmt"
	"net/http"
)

// Constructors for the errors the real service returns, with the HTTP status, Smithy shape and
// legacy code it uses. Modelled errors (those with a shape in the SDK) come out of the SDK as their
// typed error; the others as a smithy.GenericAPIError carrying the legacy code.

func errQueueDoesNotExist() *apiError {
	return &apiError{http.StatusBadRequest, "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", false,
		"The specified queue does not exist."}
}

func errQueueNameExists(name string) *apiError {
	return &apiError{http.StatusBadRequest, "QueueNameExists", "QueueAlreadyExists", false,
		fmt.Sprintf("A queue already exists with the same name and a different value for attribute(s): %s", name)}
}

func errInvalidParameterValue(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, "InvalidParameterValue", "InvalidParameterValue", false,
		fmt.Sprintf(format, args...)}
}

func errMissingParameter(name string) *apiError {
	return &apiError{http.StatusBadRequest, "MissingParameter", "MissingParameter", false,
		fmt.Sprintf("The request must contain the parameter %s.", name)}
}

func errInvalidAttributeName(name string) *apiError {
	return &apiError{http.StatusBadRequest, "InvalidAttributeName", "InvalidAttributeName", false,
		fmt.Sprintf("Unknown Attribute %s.", name)}
}

func errInvalidAttributeValue(name, value, reason string) *apiError {
	return &apiError{http.StatusBadRequest, "InvalidAttributeValue", "InvalidAttributeValue", false,
		fmt.Sprintf("Invalid value for the parameter %s: %q. Reason: %s", name, value, reason)}
}

func errInvalidMessageContents(r rune) *apiError {
	return &apiError{http.StatusBadRequest, "InvalidMessageContents", "InvalidMessageContents", false,
		fmt.Sprintf("Invalid binary character '#x%X' was found in the message body, the set of allowed characters is #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF", r)}
}

func errMessageTooLong(limit int) *apiError {
	return errInvalidParameterValue("One or more parameters are invalid. Reason: Message must be shorter than %d bytes.", limit)
}

func errEmptyBatch(entries string) *apiError {
	return &apiError{http.StatusBadRequest, "EmptyBatchRequest", "AWS.SimpleQueueService.EmptyBatchRequest", false,
		fmt.Sprintf("There should be at least one %s in the request.", entries)}
}

func errTooManyEntries(n int) *apiError {
	return &apiError{http.StatusBadRequest, "TooManyEntriesInBatchRequest", "AWS.SimpleQueueService.TooManyEntriesInBatchRequest", false,
		fmt.Sprintf("Maximum number of entries per request are %d. You have sent %d.", maxBatchEntries, n)}
}

func errIdsNotDistinct(id string) *apiError {
	return &apiError{http.StatusBadRequest, "BatchEntryIdsNotDistinct", "AWS.SimpleQueueService.BatchEntryIdsNotDistinct", false,
		fmt.Sprintf("Id %s repeated.", id)}
}

func errInvalidBatchEntryID(id string) *apiError {
	return &apiError{http.StatusBadRequest, "InvalidBatchEntryId", "AWS.SimpleQueueService.InvalidBatchEntryId", false,
		fmt.Sprintf("A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most %d letters long. Got %q.", maxBatchEntryID, id)}
}

func errBatchTooLong(size int) *apiError {
	return &apiError{http.StatusBadRequest, "BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong", false,
		fmt.Sprintf("Batch requests cannot be longer than %d bytes. You have sent %d bytes.", maxBatchBytes, size)}
}

func errReceiptHandleInvalid(handle string) *apiError {
	return &apiError{http.StatusNotFound, "ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid", false,
		fmt.Sprintf("The input receipt handle %q is not a valid receipt handle.", handle)}
}

func errMessageNotInflight() *apiError {
	return &apiError{http.StatusBadRequest, "MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight", false,
		"The message referred to isn't in flight."}
}

func errServiceUnavailable() *apiError {
	return &apiError{http.StatusServiceUnavailable, "ServiceUnavailable", "ServiceUnavailable", true,
		"The request has failed due to a temporary failure of the server."}
}

func errInternal(msg string) *apiError {
	return &apiError{http.StatusInternalServerError, "InternalError", "InternalError", true, msg}
}

func errUnknownOperation(target string) *apiError {
	return &apiError{http.StatusBadRequest, "UnknownOperationException", "UnknownOperationException", false,
		fmt.Sprintf("Unknown operation %q.", target)}
}

func errSerialization(err error) *apiError {
	return &apiError{http.StatusBadRequest, "SerializationException", "SerializationException", false,
		fmt.Sprintf("Cannot decode the request body: %v", err)}
}

func errUnsupportedProtocol(ct string) *apiError {
	return &apiError{http.StatusBadRequest, "UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation", false,
		fmt.Sprintf("Only the AWS JSON 1.0 protocol (%s) is spoken here, got Content-Type %q.", contentType, ct)}
}
