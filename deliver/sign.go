package deliver

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"hash"
	"strconv"
	"strings"
)

// Signer computes the signature header of a webhook's requests.
type Signer struct {
	scheme string
	keys   [][]byte // newest first
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
	for i, key := range s.keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		switch s.scheme {
		case SignatureStandard:
			m := hmac.New(sha256.New, key)
			m.Write([]byte(id))
			m.Write([]byte{'.'})
			m.Write(strconv.AppendInt(nil, ts, 10))
			m.Write([]byte{'.'})
			m.Write(body)
			b.WriteString("v1,")
			b.WriteString(base64.StdEncoding.EncodeToString(m.Sum(nil)))
		case SignatureSHA256:
			b.WriteString("sha256=")
			b.WriteString(hex.EncodeToString(mac(sha256.New, key, body)))
		case SignatureSHA256Base64:
			b.WriteString(base64.StdEncoding.EncodeToString(mac(sha256.New, key, body)))
		case SignatureSHA1:
			b.WriteString("sha1=")
			b.WriteString(hex.EncodeToString(mac(sha1.New, key, body)))
		}
	}
	return b.String()
}

func mac(h func() hash.Hash, key, body []byte) []byte {
	m := hmac.New(h, key)
	m.Write(body)
	return m.Sum(nil)
}
