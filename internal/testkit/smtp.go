package testkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Mail is one e-mail an SMTPServer accepted.
type Mail struct {
	From, To   string
	Subject    string
	Body       string    // decoded
	Date       time.Time // the Date header
	TLS        bool      // the session was upgraded with STARTTLS
	AuthedUser string
	Header     mail.Header
}

// SMTPServer is a real SMTP listener (go-smtp's server) on a loopback
// port keeping what it receives. With a user it offers AUTH PLAIN and
// refuses mail without it.
type SMTPServer struct {
	Host string
	Port int
	Pool *x509.CertPool // trusts the server's certificate (STARTTLS only)

	user, password string

	mu     sync.Mutex
	msgs   []Mail
	rcpts  int             // RCPT TO commands received, refused ones included
	decide func(int) error // of RCPT TO number n (from 1): nil accepts; nil func accepts all
}

// NewSMTPServer starts an SMTPServer, with STARTTLS (a self-signed
// certificate that Pool trusts) when startTLS, and with AUTH PLAIN for
// user and password when user is not empty; it stops when the test ends.
func NewSMTPServer(t testing.TB, startTLS bool, user, password string) *SMTPServer {
	t.Helper()
	ms := &SMTPServer{user: user, password: password}
	srv := smtp.NewServer(ms)
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	srv.AllowInsecureAuth = !startTLS
	srv.ErrorLog = discardLog{}
	if startTLS {
		cert, pool := SelfSigned(t)
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		ms.Pool = pool
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	ms.Host, ms.Port = "127.0.0.1", addr.Port
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ms
}

// discardLog keeps go-smtp's server quiet.
type discardLog struct{}

func (discardLog) Printf(string, ...any) {}
func (discardLog) Println(...any)        {}

// SelfSigned makes a certificate for 127.0.0.1 and localhost and a pool
// trusting it, for a TLS server in a test.
func SelfSigned(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "walhook test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// NewSession is go-smtp's Backend: one session per connection.
func (ms *SMTPServer) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &mailSession{ms: ms, conn: c}, nil
}

// SetRcpt makes decide answer each RCPT TO, numbered from 1: an error
// refuses the recipient, so the e-mail is not taken.
func (ms *SMTPServer) SetRcpt(decide func(n int) error) {
	ms.mu.Lock()
	ms.decide = decide
	ms.mu.Unlock()
}

// Attempts is the number of RCPT TO commands received: one per e-mail the
// client tried to send past MAIL FROM.
func (ms *SMTPServer) Attempts() int {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.rcpts
}

// Messages returns the e-mails accepted so far.
func (ms *SMTPServer) Messages() []Mail {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return append([]Mail(nil), ms.msgs...)
}

type mailSession struct {
	ms       *SMTPServer
	conn     *smtp.Conn
	user     string
	from, to string
}

func (s *mailSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *mailSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, password string) error {
		if s.ms.user == "" || user != s.ms.user || password != s.ms.password {
			return errors.New("invalid credentials")
		}
		s.user = user
		return nil
	}), nil
}

func (s *mailSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.ms.user != "" && s.user == "" {
		return smtp.ErrAuthRequired
	}
	s.from = from
	return nil
}

func (s *mailSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.ms.mu.Lock()
	s.ms.rcpts++
	n, decide := s.ms.rcpts, s.ms.decide
	s.ms.mu.Unlock()
	if decide != nil {
		if err := decide(n); err != nil {
			return err
		}
	}
	s.to = to
	return nil
}

func (s *mailSession) Data(r io.Reader) error {
	m, err := mail.ReadMessage(r)
	if err != nil {
		return err
	}
	var body io.Reader = m.Body
	if m.Header.Get("Content-Transfer-Encoding") == "quoted-printable" {
		body = quotedprintable.NewReader(m.Body)
	}
	text, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	subject, _ := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
	date, _ := m.Header.Date()
	_, tlsOn := s.conn.TLSConnectionState()
	s.ms.mu.Lock()
	s.ms.msgs = append(s.ms.msgs, Mail{
		From: s.from, To: s.to, Subject: subject, Body: strings.ReplaceAll(string(text), "\r\n", "\n"),
		Date: date, TLS: tlsOn, AuthedUser: s.user, Header: m.Header,
	})
	s.ms.mu.Unlock()
	return nil
}

func (s *mailSession) Reset()        {}
func (s *mailSession) Logout() error { return nil }

// WriteCertFiles writes cert and its key as PEM files in dir, for a
// config's tls_cert and tls_key.
func WriteCertFiles(t testing.TB, dir string, cert tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	kder, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for _, f := range []struct {
		path string
		b    *pem.Block
	}{{certFile, &pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}}, {keyFile, &pem.Block{Type: "PRIVATE KEY", Bytes: kder}}} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(f.b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}
