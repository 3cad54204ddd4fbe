package cdc

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

// The SQLSTATE codes walhook branches on (PostgreSQL's Appendix A).
const (
	SQLStateInvalidAuthorization  = "28000" // pg_hba.conf has no line that lets the role in
	SQLStateInvalidPassword       = "28P01"
	SQLStateTooManyConnections    = "53300" // max_connections, max_wal_senders or the role's CONNECTION LIMIT
	SQLStateInsufficientPrivilege = "42501"
	SQLStateDuplicateObject       = "42710" // e.g. the slot exists already
	SQLStateObjectInUse           = "55006" // START_REPLICATION while another process streams the slot
)

// SQLState returns the SQLSTATE of a PostgreSQL error in err's chain, or
// "" when err is no PostgreSQL error.
func SQLState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}
