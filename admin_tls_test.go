package main

import (
	"crypto/tls"
	"net/http"
	"path/filepath"
	"testing"
	"time"
	"walhook/internal/testkit"
)

// TestAdminTLS: with tls_cert and tls_key the admin listener speaks
// HTTPS with that certificate and refuses plain HTTP; the server has every
// timeout set, so an idle or slow connection does not stay for ever.
func TestAdminTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, pool := testkit.SelfSigned(t)
	certFile, keyFile := testkit.WriteCertFiles(t, dir, cert)

	listen := "127.0.0.1:0"
	if _, err := adminListener(AdminConfig{Listen: &listen, TLSCert: certFile, TLSKey: filepath.Join(dir, "missing.key")}); err == nil {
		t.Error("a missing key file is not an error")
	}
	ln, err := adminListener(AdminConfig{Listen: &listen, TLSCert: certFile, TLSKey: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	srv := newAdminServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	if srv.IdleTimeout <= 0 || srv.ReadTimeout <= 0 || srv.ReadHeaderTimeout <= 0 || srv.WriteTimeout <= 0 {
		t.Errorf("admin server timeouts: idle %s, read %s, read header %s, write %s; want all set",
			srv.IdleTimeout, srv.ReadTimeout, srv.ReadHeaderTimeout, srv.WriteTimeout)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	resp, err := client.Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatalf("HTTPS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Errorf("HTTPS: status %d, TLS %v", resp.StatusCode, resp.TLS != nil)
	}
	plain := &http.Client{Timeout: 10 * time.Second}
	if resp, err := plain.Get("http://" + ln.Addr().String() + "/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP is served too")
		}
	}
}
