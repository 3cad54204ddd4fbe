package deliver

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"hash"
	"io"
	"strconv"
	"strings"
	"sync"
)

// Signer computes the signature header of a webhook's requests.
type Signer struct {
	scheme string
	keys   [][]byte     // newest first
	macs   []*sync.Pool // per key: HMACs to Reset and reuse, sparing the key setup per request
}

// NewSigner returns a Signer for the scheme (standard, sha256,
// sha256-base64, sha1) and the secrets, newest first. With scheme
// "standard" a "whsec_<base64>" secret signs with its decoded bytes.
func NewSigner(scheme string, secrets []string) *Signer {
	s := &Signer{scheme: scheme}
	for _, sec := range secrets {
		key := []byte(sec)
		if scheme == SignatureStandard {
			if rest, ok := strings.CutPrefix(sec, "whsec_"); ok {
				if k, err := base64.StdEncoding.DecodeString(rest); err == nil {
					key = k
				}
			}
		}
		s.keys = append(s.keys, key)
		h := sha256.New
		if scheme == SignatureSHA1 {
			h = sha1.New
		}
		s.macs = append(s.macs, &sync.Pool{New: func() any { return hmac.New(h, key) }})
	}
	return s
}

// Sign returns the header value for a request with the given Webhook-Id,
// Webhook-Timestamp (unix seconds) and body: one signature per secret,
// space-separated, newest first. It returns "" without secrets.
func (s *Signer) Sign(id string, ts int64, body []byte) string {
	if s == nil || len(s.keys) == 0 {
		return ""
	}
	var b strings.Builder
	var sum [sha256.Size]byte
	for i := range s.keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		m := s.macs[i].Get().(hash.Hash)
		m.Reset()
		if s.scheme == SignatureStandard {
			var ts10 [20]byte
			io.WriteString(m, id)
			m.Write(append(strconv.AppendInt(append(ts10[:0], '.'), ts, 10), '.'))
		}
		m.Write(body)
		mac := m.Sum(sum[:0])
		s.macs[i].Put(m)
		switch s.scheme {
		case SignatureStandard:
			b.WriteString("v1,")
			b.WriteString(base64.StdEncoding.EncodeToString(mac))
		case SignatureSHA256:
			b.WriteString("sha256=")
			b.WriteString(hex.EncodeToString(mac))
		case SignatureSHA256Base64:
			b.WriteString(base64.StdEncoding.EncodeToString(mac))
		case SignatureSHA1:
			b.WriteString("sha1=")
			b.WriteString(hex.EncodeToString(mac))
		}
	}
	return b.String()
}
