package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// Kind classifies why the vault could not be read.
type Kind int

// Kinds of Error.
const (
	// Unreachable: no answer from the vault or Microsoft Entra (network,
	// DNS, TLS, timeout).
	Unreachable Kind = iota + 1
	// BadCredentials: Microsoft Entra or the vault refused the credential.
	BadCredentials
	// Forbidden: the identity may not Get the secret.
	Forbidden
	// Failed: any other answer, after the SDK's retries.
	Failed
)

func (k Kind) String() string {
	switch k {
	case Unreachable:
		return "unreachable"
	case BadCredentials:
		return "bad credentials"
	case Forbidden:
		return "forbidden"
	}
	return "failed"
}

// Error is a failure to read the vault: one line naming the vault and the
// cause, never a secret value.
type Error struct {
	Vault string // the vault's URL
	Kind  Kind
	Cause string // one line
	Err   error
}

func (e *Error) Error() string {
	return fmt.Sprintf("Azure Key Vault %s: %s: %s", e.Vault, e.Kind, e.Cause)
}

func (e *Error) Unwrap() error { return e.Err }

// classify turns an SDK error met while reading secret into an *Error.
func (s *Source) classify(secret string, err error) error {
	e := &Error{Vault: s.url, Err: err}
	var authErr *azidentity.AuthenticationFailedError
	var respErr *azcore.ResponseError
	var netErr net.Error
	switch {
	case errors.As(err, &authErr) && authErr.RawResponse != nil:
		e.Kind = BadCredentials
		e.Cause = "Microsoft Entra refused the " + s.cred + ": " + entraReason(authErr.RawResponse)
	case errors.As(err, &authErr):
		// azidentity reports a request Entra never answered (refused,
		// timed out, untrusted certificate) as a failed authentication
		// without a response; the cause is the network.
		e.Kind = Unreachable
		e.Cause = "no answer from Microsoft Entra for the " + s.cred + ": " + flatten(authErr.Error())
	case errors.As(err, &respErr) && respErr.StatusCode == http.StatusUnauthorized:
		e.Kind = BadCredentials
		e.Cause = "the vault refused the token of the " + s.cred + " (wrong tenant?): " + vaultReason(respErr)
	case errors.As(err, &respErr) && respErr.StatusCode == http.StatusForbidden:
		e.Kind = Forbidden
		e.Cause = "the " + s.cred + " may not get secret " + secret + " (it needs the Get permission on secrets, or the Key Vault Secrets User role): " + vaultReason(respErr)
	case errors.As(err, &respErr):
		e.Kind = Failed
		e.Cause = "getting secret " + secret + ": " + vaultReason(respErr)
	case errors.As(err, &netErr) || errors.Is(err, context.DeadlineExceeded):
		e.Kind = Unreachable
		e.Cause = flatten(err.Error())
	default:
		e.Kind = Failed
		e.Cause = flatten(err.Error())
	}
	return e
}

// entraReason is the status and Entra's error code and first description
// line (e.g. "401 invalid_client: AADSTS7000215: Invalid client secret
// provided."). Entra never echoes the credential in it.
func entraReason(resp *http.Response) string {
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	reason := resp.Status
	if b, err := runtime.Payload(resp); err == nil && json.Unmarshal(b, &body) == nil && body.Error != "" {
		reason = fmt.Sprintf("%d %s", resp.StatusCode, body.Error)
		if body.Description != "" {
			reason += ": " + body.Description
		}
	}
	return oneLine(reason)
}

// vaultReason is the status and Key Vault's error code and message.
func vaultReason(e *azcore.ResponseError) string {
	reason := fmt.Sprintf("%d %s", e.StatusCode, e.ErrorCode)
	if e.RawResponse == nil {
		return reason
	}
	var body struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if b, err := runtime.Payload(e.RawResponse); err == nil && json.Unmarshal(b, &body) == nil && body.Error.Message != "" {
		reason += ": " + body.Error.Message
	}
	return oneLine(reason)
}

// oneLine keeps the first line of s (Entra's descriptions go on with trace
// ids), at most maxCause characters.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = strings.TrimSpace(s[:i])
	}
	return clip(s)
}

// flatten joins the lines of s (SDK errors put the cause on the next line),
// at most maxCause characters.
func flatten(s string) string { return clip(strings.Join(strings.Fields(s), " ")) }

const maxCause = 400

func clip(s string) string {
	if utf8.RuneCountInString(s) > maxCause {
		s = string([]rune(s)[:maxCause]) + "..."
	}
	return s
}
