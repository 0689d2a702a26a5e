package serve

import (
	"errors"
	"fmt"
	"net/http"
)

var (
	// ErrBadConfig: an application, option or config file is malformed.
	ErrBadConfig = errors.New("serve: bad config")
	// ErrNoReplica: no replica of the deployment could take the request
	// (all full and the queue too, or none running before the deadline).
	ErrNoReplica = errors.New("serve: no replica available")
	// ErrDeployFailed: a deployment's replicas keep failing to start (its
	// constructor fails, or the binary lacks the class); the controller
	// goes on trying, more and more slowly.
	ErrDeployFailed = errors.New("serve: deployment failed")
	// ErrNotFound: no such application or deployment.
	ErrNotFound = errors.New("serve: not found")
)

// HTTPError is an error with an HTTP status: a handler returning one
// answers with that status and message instead of 500.
type HTTPError struct {
	Status  int
	Message string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Errorf is an HTTPError.
func Errorf(status int, format string, args ...any) error {
	return &HTTPError{Status: status, Message: fmt.Sprintf(format, args...)}
}
