package deliver

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

// The hand-written record encoding must be byte for byte what
// encoding/json writes, so records stored before and after it read alike.
func TestAppendRecordMatchesEncodingJSON(t *testing.T) {
	at := time.Date(2026, 11, 29, 3, 4, 5, 123456789, time.UTC)
	odd := "a\"b\\c\n\r\t\x00\x1f<>&\u2028\u2029é\xff\xfe" + "z"
	recs := []*record{
		{EventID: "0/16B3748-0", Event: "users.insert", CreatedAt: at},
		{EventID: odd, Event: odd, Entity: odd, EntityID: odd, CreatedAt: at.In(time.FixedZone("x", 3600)), Due: at.Add(time.Hour)},
		{EventID: "e", Event: "orders.update", Entity: "orders", EntityID: "7", CreatedAt: at, Attempts: []Attempt{
			{N: 1, At: at, RequestHeaders: http.Header{"Content-Type": {"application/json"}, "B": {odd, ""}, "A": nil},
				RequestBody: `{"id":1}` + odd, Status: 503, ResponseHeaders: http.Header{"Retry-After": {"3"}},
				ResponseBody: odd, Duration: 1234567 * time.Nanosecond, Error: odd},
			{N: 2, At: at, RequestHeaders: http.Header{}, Status: 0, ResponseHeaders: http.Header{}, Duration: -1},
			{N: 3, At: time.Time{}},
		}},
	}
	for i, r := range recs {
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendRecord(nil, r); string(got) != string(want) {
			t.Errorf("record %d:\n got %s\nwant %s", i, got, want)
		}
		back, err := decodeRecord(encodeRecord(r))
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if back.Event != r.Event && r.Event != odd || len(back.Attempts) != len(r.Attempts) || back.Status != StatusPending {
			t.Errorf("record %d did not read back: %+v", i, back)
		}
	}
}
