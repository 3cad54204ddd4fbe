package deliver_test

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"walhook/deliver"
	"walhook/internal/testkit"
)

// listenerOn is a receiver answering 200 on ip (127.0.0.x: every one of
// them is this machine's).
func listenerOn(t *testing.T, ip string) *testkit.Receiver {
	t.Helper()
	return testkit.ListenReceiver(t, ip+":0", func(int, testkit.Request) testkit.Response {
		return testkit.Response{Body: "secret credentials"}
	})
}

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

// TestAddressPolicyCheck: the built-in refusals, allow before deny, and
// IPv4-mapped IPv6 addresses judged as IPv4.
func TestAddressPolicyCheck(t *testing.T) {
	t.Parallel()
	strict := deliver.AddressPolicy{APIDenyPrivate: true, Deny: prefixes("203.0.113.0/24"), Allow: prefixes("169.254.10.0/24", "10.1.0.0/16")}
	for _, tc := range []struct {
		p      deliver.AddressPolicy
		source string
		addr   string
		ok     bool
	}{
		{deliver.AddressPolicy{}, deliver.SourceConfig, "169.254.169.254", false},
		{deliver.AddressPolicy{}, deliver.SourceAPI, "169.254.169.254", false},
		{deliver.AddressPolicy{}, deliver.SourceConfig, "::ffff:169.254.169.254", false},
		{deliver.AddressPolicy{}, deliver.SourceConfig, "fd00:ec2::254", false},
		{deliver.AddressPolicy{}, deliver.SourceConfig, "fe80::1", false},
		{deliver.AddressPolicy{}, deliver.SourceConfig, "127.0.0.1", true},
		{deliver.AddressPolicy{}, deliver.SourceAPI, "10.0.0.5", true},
		{deliver.AddressPolicy{}, deliver.SourceConfig, "93.184.215.14", true},
		{strict, deliver.SourceAPI, "127.0.0.1", false},
		{strict, deliver.SourceAPI, "::1", false},
		{strict, deliver.SourceAPI, "0.0.0.0", false},
		{strict, deliver.SourceAPI, "192.168.1.1", false},
		{strict, deliver.SourceAPI, "fd12::1", false},
		{strict, deliver.SourceConfig, "192.168.1.1", true},
		{strict, deliver.SourceAPI, "10.1.2.3", true},
		{strict, deliver.SourceConfig, "169.254.10.7", true},
		{strict, deliver.SourceConfig, "203.0.113.9", false},
		{strict, deliver.SourceAPI, "93.184.215.14", true},
	} {
		err := tc.p.Check(tc.source, netip.MustParseAddr(tc.addr))
		if (err == nil) != tc.ok {
			t.Errorf("%s webhook to %s (allow %v, deny %v, api_deny_private %v): %v, want allowed %v",
				tc.source, tc.addr, tc.p.Allow, tc.p.Deny, tc.p.APIDenyPrivate, err, tc.ok)
		}
	}
}

// TestAddressPolicyDial: the policy holds on the address dialled, for the
// events and retries of a config webhook and the test ping of an API
// webhook; a refused attempt names the policy and returns nothing of the
// receiver's.
func TestAddressPolicyDial(t *testing.T) {
	t.Parallel()
	denied := listenerOn(t, "127.0.0.2")
	open := listenerOn(t, "127.0.0.3")
	allowed := listenerOn(t, "127.0.0.4")
	e := newEnv(t, []string{"denied", "open", "byname"}, func(o *deliver.Options) {
		o.Policy = deliver.AddressPolicy{Deny: prefixes("127.0.0.1/32", "127.0.0.2/32", "::1/128"), Allow: prefixes("127.0.0.4/32"), APIDenyPrivate: true}
	})
	// byname names localhost, which only the dial sees as 127.0.0.1 (or
	// ::1): nothing listens there, so only the policy can refuse it first.
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(denied.URL, "http://"))
	e.setHooks(t,
		hook("denied", denied.URL, func(w *deliver.Webhook) { w.MaxAttempts = 2 }),
		hook("open", open.URL),
		hook("byname", "http://localhost:"+port+"/", func(w *deliver.Webhook) { w.MaxAttempts = 1 }),
	)
	e.write(t, txOf(100, event(100, 0, 1, "a@x")))
	d := e.latest(t, "denied", deliver.StatusFailed)
	if len(d.Attempts) != 2 {
		t.Errorf("%d attempts, want 2 (the retry refused too)", len(d.Attempts))
	}
	for _, a := range d.Attempts {
		if a.Status != 0 || !strings.Contains(a.Error, "refused by the outbound address policy") || a.ResponseBody != "" {
			t.Errorf("attempt %d: status %d, error %q, body %q; want the policy's refusal", a.N, a.Status, a.Error, a.ResponseBody)
		}
	}
	if d := e.latest(t, "byname", deliver.StatusFailed); !strings.Contains(d.Attempts[0].Error, "deny_networks") {
		t.Errorf("localhost: %q, want the policy's refusal", d.Attempts[0].Error)
	}
	e.latest(t, "open", deliver.StatusSuccess)

	// API webhooks: private addresses refused, the allowed one reached.
	for _, tc := range []struct {
		name, url string
		ok        bool
	}{{"api-open", open.URL, false}, {"api-allowed", allowed.URL, true}} {
		if _, err := e.q.CreateWebhook(hook(tc.name, tc.url)); err != nil {
			t.Fatal(err)
		}
		att, err := e.q.Test(t.Context(), tc.name)
		if err != nil {
			t.Fatal(err)
		}
		if tc.ok != (att.Status == 200) || !tc.ok && (!strings.Contains(att.Error, "api_deny_private") || att.ResponseBody != "") {
			t.Errorf("%s test ping: status %d, error %q, body %q", tc.name, att.Status, att.Error, att.ResponseBody)
		}
	}
	// The config webhook's test ping to the same address goes out.
	if att, _ := e.q.Test(t.Context(), "open"); att.Status != 200 {
		t.Errorf("config webhook's test ping: %d %q", att.Status, att.Error)
	}
	if denied.Count() != 0 {
		t.Errorf("the denied receiver got %d requests", denied.Count())
	}
	if open.Count() != 2 || allowed.Count() != 1 {
		t.Errorf("open got %d requests (want the event and a ping), allowed %d (want 1)", open.Count(), allowed.Count())
	}
}

// TestMetadataRefused: with no policy configured, the cloud metadata
// address of issue 19 is refused for API and config webhooks alike,
// before any packet leaves.
func TestMetadataRefused(t *testing.T) {
	t.Parallel()
	const url = "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token"
	e := newEnv(t, nil)
	e.setHooks(t, hook("config-meta", url))
	if _, err := e.q.CreateWebhook(hook("api-meta", url, func(w *deliver.Webhook) {
		w.Method, w.Headers = "GET", map[string]string{"Metadata-Flavor": "Google"}
	})); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"config-meta", "api-meta"} {
		att, err := e.q.Test(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		if att.Status != 0 || !strings.Contains(att.Error, "169.254.169.254 refused by the outbound address policy") {
			t.Errorf("%s: status %d, error %q", name, att.Status, att.Error)
		}
	}
}
