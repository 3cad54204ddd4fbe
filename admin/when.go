package admin

import (
	"encoding/json"
	"net/http"

	"walhook/deliver"
)

// whenTryInput is the body of POST /api/webhooks/{name}/when/test: an
// expression ("" or missing: the webhook's own) and an event as a
// receiver's JSON body shows it (missing: the webhook's latest stored
// deliveries, at most limit, default 20).
type whenTryInput struct {
	When  string          `json:"when"`
	Event json.RawMessage `json:"event"`
	Limit int             `json:"limit"`
}

// whenTryResult says which events the expression would have sent.
type whenTryResult struct {
	When    string               `json:"when"`
	Results []deliver.WhenResult `json:"results"`
}

func (s *Server) tryWhen(w http.ResponseWriter, r *http.Request) {
	var in whenTryInput
	if r.ContentLength != 0 && !decodeBody(w, r, &in) {
		return
	}
	if string(in.Event) == "null" {
		in.Event = nil
	}
	expr, results, err := s.opts.Queue.TryWhen(r.PathValue("name"), in.When, in.Event, in.Limit)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, whenTryResult{When: expr, Results: results})
}
