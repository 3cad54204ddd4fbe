package admin

import (
	"errors"
	"net/http"
	"time"

	"walhook/deliver"
)

// Backfiller starts and reports backfills: a webhook sent the rows its
// tables hold now, as create events, in order with the changes.
type Backfiller interface {
	// StartBackfill starts a backfill of webhook name over events (entity
	// names or schema.table; none: the webhook's own) and returns at once.
	StartBackfill(name string, events []string) (BackfillStatus, error)
	// Backfill is the webhook's latest backfill since walhook started.
	Backfill(name string) (BackfillStatus, bool)
}

// BackfillStatus is a backfill's progress.
type BackfillStatus struct {
	Webhook   string     `json:"webhook"`
	Tables    []string   `json:"tables"`
	State     string     `json:"state"`                  // running, done, failed, or interrupted (by a stop, or the loss of the lead, until resumed)
	Point     string     `json:"snapshot_lsn,omitempty"` // the WAL position the rows are as of
	Read      int64      `json:"rows_read"`
	Queued    int64      `json:"rows_queued"`
	Skipped   int64      `json:"rows_skipped"` // a newer change of the row was queued first
	Error     string     `json:"error,omitempty"`
	Resumed   bool       `json:"resumed,omitempty"` // after a restart, from where the stored rows ended
	StartedAt time.Time  `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
	// RunsOn names the walhook that runs it, when that is another one
	// sharing the store (its counts are then not known here).
	RunsOn string `json:"runs_on,omitempty"`
}

// ErrBackfillInvalid marks a backfill request the user must change (422).
var ErrBackfillInvalid = errors.New("backfill")

// ErrNotLeader marks a request only the walhook that reads the slot takes
// (409): a backfill, among walhooks sharing a store.
var ErrNotLeader = errors.New("this walhook does not read the slot")

func (s *Server) startBackfill(w http.ResponseWriter, r *http.Request) {
	if s.opts.Backfills == nil {
		writeError(w, http.StatusNotFound, "backfills are not available")
		return
	}
	var req struct {
		Events []string `json:"events"`
	}
	if r.ContentLength != 0 && !decodeBody(w, r, &req) {
		return
	}
	name := r.PathValue("name")
	st, err := s.opts.Backfills.StartBackfill(name, req.Events)
	if err != nil {
		writeErr(w, err)
		return
	}
	s.opts.Logger.Info("backfill started through the API", "webhook", name, "tables", st.Tables)
	writeJSON(w, http.StatusAccepted, st)
}

func (s *Server) getBackfill(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, ok := s.opts.Queue.Webhook(name); !ok {
		writeErr(w, deliver.ErrNotFound)
		return
	}
	var st BackfillStatus
	ok := false
	if s.opts.Backfills != nil {
		st, ok = s.opts.Backfills.Backfill(name)
	}
	if !ok {
		writeError(w, http.StatusNotFound, "webhook %q has had no backfill since walhook started", name)
		return
	}
	writeJSON(w, http.StatusOK, st)
}
