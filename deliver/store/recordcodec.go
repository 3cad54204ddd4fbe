package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Deliveries are stored in a binary form: the status byte, binaryRecord,
// the delivery's fields, then its attempts, if any. Every delivery is
// written when queued and again with each attempt, and read back when its
// webhook's window reaches it; JSON cost ten times as long to read and, for
// the headers of a finished attempt, five times as long to write.
// Deliveries stored by older walhooks are JSON, which starts with '{'; a
// pending one in the first binary form ends after its fields.
const binaryRecord = 0x01

// binaryRecordPrev is binaryRecord with the previous entity id after the
// entity id: a delivery of an UPDATE that changed the row's key.
const binaryRecordPrev = 0x02

// binaryRecordBatch is binaryRecordPrev (the previous entity id possibly
// empty) with the batch id after the due time: a delivery whose attempts
// went out in a batch (issue 18).
const binaryRecordBatch = 0x03

func encodeRecord(r *Record) []byte {
	return appendRecord(make([]byte, 0, recordSize(r)), r)
}

// appendRecord appends r's stored form to dst.
func appendRecord(dst []byte, r *Record) []byte {
	start := len(dst)
	b := append(dst, statusByte(r.Status), binaryRecord)
	for _, s := range []string{r.EventID, r.Event, r.Entity, r.EntityID} {
		b = appendString(b, s)
	}
	switch {
	case r.Batch != "":
		b[start+1] = binaryRecordBatch
		b = appendString(b, r.PrevEntityID)
	case r.PrevEntityID != "":
		b[start+1] = binaryRecordPrev
		b = appendString(b, r.PrevEntityID)
	}
	b = appendTime(b, r.CreatedAt)
	b = appendTime(b, r.Due)
	if r.Batch != "" {
		b = appendString(b, r.Batch)
	}
	if len(r.Attempts) == 0 {
		return b
	}
	b = binary.AppendUvarint(b, uint64(len(r.Attempts)))
	for i := range r.Attempts {
		b = appendAttempt(b, &r.Attempts[i])
	}
	return b
}

func appendAttempt(b []byte, a *Attempt) []byte {
	b = binary.AppendVarint(b, int64(a.N))
	b = appendTime(b, a.At)
	b = appendHeader(b, a.RequestHeaders)
	b = appendString(b, a.RequestBody)
	b = binary.AppendVarint(b, int64(a.Status))
	b = appendHeader(b, a.ResponseHeaders)
	b = appendString(b, a.ResponseBody)
	b = binary.AppendVarint(b, int64(a.Duration))
	return appendString(b, a.Error)
}

// appendHeader writes h's length plus one (0 for nil), then each name and
// its values.
func appendHeader(b []byte, h http.Header) []byte {
	if h == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(h))+1)
	for k, vs := range h {
		b = appendString(b, k)
		if vs == nil {
			b = append(b, 0)
			continue
		}
		b = binary.AppendUvarint(b, uint64(len(vs))+1)
		for _, v := range vs {
			b = appendString(b, v)
		}
	}
	return b
}

// recordSize guesses an encoded record's length, to allocate it once.
func recordSize(r *Record) int {
	n := 32 + len(r.EventID) + len(r.Event) + len(r.Entity) + len(r.EntityID) + len(r.PrevEntityID) + len(r.Batch)
	for i := range r.Attempts {
		a := &r.Attempts[i]
		n += 48 + len(a.RequestBody) + len(a.ResponseBody) + len(a.Error) + headerSize(a.RequestHeaders) + headerSize(a.ResponseHeaders)
	}
	return n
}

func headerSize(h http.Header) int {
	n := 1
	for k, vs := range h {
		n += 2 + len(k)
		for _, v := range vs {
			n += 2 + len(v)
		}
	}
	return n
}

func decodeRecord(v []byte) (*Record, error) {
	if len(v) < 2 {
		return nil, fmt.Errorf("decode delivery: %d bytes", len(v))
	}
	if v[1] != binaryRecord && v[1] != binaryRecordPrev && v[1] != binaryRecordBatch {
		r := &Record{}
		if err := json.Unmarshal(v[1:], r); err != nil {
			return nil, fmt.Errorf("decode delivery: %w", err)
		}
		r.Status = statusName(v[0])
		return r, nil
	}
	r := eventReader{b: v[2:]}
	rec := &Record{Status: statusName(v[0]), EventID: r.string(), Event: r.name(), Entity: r.name(), EntityID: r.string()}
	if v[1] == binaryRecordPrev || v[1] == binaryRecordBatch {
		rec.PrevEntityID = r.string()
	}
	rec.CreatedAt = r.time()
	rec.Due = r.time()
	if v[1] == binaryRecordBatch {
		rec.Batch = r.string()
	}
	if len(r.b) > 0 {
		n := r.uvarint()
		switch {
		case n == 0 && r.err == nil:
			r.fail(errors.New("an empty list of attempts"))
		case n > uint64(len(r.b)): // every attempt takes more than a byte
			r.fail(errTruncated)
		}
		if r.err == nil {
			rec.Attempts = make([]Attempt, n)
		}
		for i := range rec.Attempts {
			rec.Attempts[i] = r.attempt()
		}
	}
	r.end("delivery")
	if r.err != nil {
		return nil, fmt.Errorf("decode delivery: %w", r.err)
	}
	return rec, nil
}

func (r *eventReader) attempt() Attempt {
	a := Attempt{N: int(r.varint()), At: r.time()}
	a.RequestHeaders = r.header()
	a.RequestBody = r.string()
	a.Status = int(r.varint())
	a.ResponseHeaders = r.header()
	a.ResponseBody = r.string()
	a.Duration = time.Duration(r.varint())
	a.Error = r.string()
	return a
}

// header reads appendHeader's form; the names are interned, the values not.
func (r *eventReader) header() http.Header {
	n, ok := r.count()
	if !ok {
		return nil
	}
	h := make(http.Header, n)
	for range n {
		k := r.name()
		m, ok := r.count()
		if r.err != nil {
			return nil
		}
		if !ok {
			h[k] = nil
			continue
		}
		vs := make([]string, m)
		for i := range vs {
			vs[i] = r.string()
		}
		h[k] = vs
	}
	return h
}
