package stream

// ConnResult is what became of a request for a stream (decided by the HTTP layer): the result label of
// sse_connections_total. Every value is in ConnResults.
type ConnResult string

// The results, in the order of the checks that decide them.
const (
	ConnBadRequest       ConnResult = "bad_request"
	ConnUnauthorized     ConnResult = "unauthorized"
	ConnForbidden        ConnResult = "forbidden"
	ConnRejectedDraining ConnResult = "rejected_draining"
	ConnRejectedLimit    ConnResult = "rejected_limit"
	ConnRejectedIPLimit  ConnResult = "rejected_ip_limit"
	ConnAccepted         ConnResult = "accepted"
)

// ConnResults returns every ConnResult, so metrics can create each series
// before its first count.
func ConnResults() []ConnResult {
	return []ConnResult{
		ConnBadRequest, ConnUnauthorized, ConnForbidden, ConnRejectedDraining,
		ConnRejectedLimit, ConnRejectedIPLimit, ConnAccepted,
	}
}
