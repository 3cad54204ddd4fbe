package deliver

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// AddressPolicy decides which addresses webhooks may connect to. It is
// checked on the address actually dialled, after DNS, so a name that
// resolves to another address at delivery time than when it was checked
// (DNS rebinding) gets no further; events, retries and the test ping all
// dial through it.
//
// In order: an address in Allow is allowed; one in Deny is refused; a
// link-local or cloud metadata address (MetadataNetworks) is refused for
// every webhook; with APIDenyPrivate, a loopback, private or unspecified
// address (PrivateNetworks) is refused for webhooks created through the
// admin API; any other is allowed.
type AddressPolicy struct {
	Allow          []netip.Prefix // [delivery] allow_networks: allowed whatever else says no
	Deny           []netip.Prefix // [delivery] deny_networks: refused for every webhook
	APIDenyPrivate bool           // [delivery] api_deny_private
}

// MetadataNetworks are refused for every webhook unless allowed: link-local
// addresses, where cloud instances serve their credentials
// (169.254.169.254, fd00:ec2::254 on AWS's IPv6, 100.100.100.200 on
// Alibaba Cloud).
var MetadataNetworks = []netip.Prefix{
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("fd00:ec2::254/128"),
	netip.MustParsePrefix("100.100.100.200/32"),
}

// PrivateNetworks are refused for API webhooks with APIDenyPrivate:
// loopback, unspecified (0.0.0.0 reaches this machine), RFC 1918, shared
// (CGNAT) and unique local addresses.
var PrivateNetworks = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("fc00::/7"),
}

// PolicyError is the error of a dial the address policy refused.
type PolicyError struct {
	Addr   netip.Addr
	Reason string // which rule refused it
}

func (e *PolicyError) Error() string {
	return fmt.Sprintf("address %s refused by the outbound address policy: %s", e.Addr, e.Reason)
}

// Check returns a *PolicyError when a webhook of source may not connect
// to addr, nil when it may.
func (p AddressPolicy) Check(source string, addr netip.Addr) error {
	addr = addr.Unmap()
	in := func(ps []netip.Prefix) bool {
		for _, n := range ps {
			if n.Contains(addr) {
				return true
			}
		}
		return false
	}
	switch {
	case in(p.Allow):
		return nil
	case in(p.Deny):
		return &PolicyError{addr, "in [delivery] deny_networks"}
	case in(MetadataNetworks):
		return &PolicyError{addr, "link-local and cloud metadata addresses are refused for every webhook (allow one with [delivery] allow_networks)"}
	case p.APIDenyPrivate && source == SourceAPI && in(PrivateNetworks):
		return &PolicyError{addr, "loopback and private addresses are refused for webhooks created through the API ([delivery] api_deny_private)"}
	}
	return nil
}

// control is a net.Dialer's Control for a webhook of source: it sees the
// address being dialled once the name is resolved.
func (p AddressPolicy) control(source string) func(network, address string, _ syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			host, _, _ := net.SplitHostPort(address)
			a, perr := netip.ParseAddr(host)
			if perr != nil {
				return fmt.Errorf("outbound address policy: cannot read the address %q", address)
			}
			ap = netip.AddrPortFrom(a, 0)
		}
		return p.Check(source, ap.Addr())
	}
}
