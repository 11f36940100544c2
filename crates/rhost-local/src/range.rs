//! Ranges and range sets with upstream host-local's rules: a range is `[rangeStart, rangeEnd]`
//! inside a subnet with a gateway; a range set is a list of ranges of one family that one
//! address is taken from; iteration is round-robin after the last reserved address.
//!
//! Unlike upstream, the network address and the IPv4 broadcast address are never handed out even
//! when an explicit rangeStart/rangeEnd includes them: they are skipped like the gateway.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// An address as a number, for arithmetic; the family travels separately.
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

pub fn from_u128(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

/// One range, canonical: every field set and consistent (see `config` for the checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
}

impl Range {
    pub fn is_v4(&self) -> bool {
        self.subnet.addr().is_ipv4()
    }

    /// Inside `[start, end]` (upstream's `Range.Contains`).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.is_v4()
            && self.subnet.contains(&ip)
            && (to_u128(self.start)..=to_u128(self.end)).contains(&to_u128(ip))
    }

    /// Never handed out: the gateway, the network address, the IPv4 broadcast address.
    pub fn is_reserved(&self, ip: IpAddr) -> bool {
        ip == self.gateway
            || ip == self.subnet.network()
            || (self.is_v4() && ip == self.subnet.broadcast())
    }

    /// Addresses that can be handed out.
    pub fn capacity(&self) -> u128 {
        let span = (to_u128(self.end) - to_u128(self.start)).saturating_add(1);
        let mut excluded = vec![self.gateway, self.subnet.network()];
        if self.is_v4() {
            excluded.push(self.subnet.broadcast());
        }
        excluded.sort();
        excluded.dedup();
        span - excluded.iter().filter(|ip| self.contains(**ip)).count() as u128
    }

    /// Same family and intersecting `[start, end]` (upstream compares ranges, not subnets).
    pub fn overlaps(&self, other: &Range) -> bool {
        self.is_v4() == other.is_v4()
            && to_u128(self.start) <= to_u128(other.end)
            && to_u128(other.start) <= to_u128(self.end)
    }

    /// `ip` with this range's prefix length, as results carry it.
    pub fn with_prefix(&self, ip: IpAddr) -> IpNet {
        IpNet::new(ip, self.subnet.prefix_len()).expect("prefix comes from a valid subnet")
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// The ranges one address is taken from, and where they came from in the config (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet {
    pub ranges: Vec<Range>,
    /// Config path, e.g. `ipam.ranges[1]`.
    pub source: String,
}

impl RangeSet {
    pub fn is_v4(&self) -> bool {
        self.ranges[0].is_v4()
    }

    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.ranges.iter().find(|r| r.contains(ip))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    pub fn capacity(&self) -> u128 {
        self.ranges
            .iter()
            .fold(0u128, |n, r| n.saturating_add(r.capacity()))
    }

    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.ranges
            .iter()
            .any(|a| other.ranges.iter().any(|b| a.overlaps(b)))
    }

    /// Allocatable addresses in upstream's round-robin order: starting after `last` when it lies
    /// in the set (so `last` itself comes last), else at the first range's start; every address
    /// once, wrapping from one range's end to the next range's start.
    pub fn candidates(&self, last: Option<IpAddr>) -> Candidates<'_> {
        let (range, next) = match last.and_then(|ip| {
            self.ranges
                .iter()
                .position(|r| r.contains(ip))
                .map(|i| (i, ip))
        }) {
            Some((i, ip)) if ip == self.ranges[i].end => {
                let j = (i + 1) % self.ranges.len();
                (j, to_u128(self.ranges[j].start))
            }
            Some((i, ip)) => (i, to_u128(ip) + 1),
            None => (0, to_u128(self.ranges[0].start)),
        };
        let left = self.ranges.iter().fold(0u128, |n, r| {
            n.saturating_add((to_u128(r.end) - to_u128(r.start)).saturating_add(1))
        });
        Candidates {
            set: self,
            range,
            next,
            left,
        }
    }

    /// "range set 0 (ipam.ranges[0]: 10.1.0.2-10.1.0.254)"
    pub fn describe(&self, index: usize) -> String {
        let ranges: Vec<String> = self.ranges.iter().map(Range::to_string).collect();
        format!("range set {index} ({}: {})", self.source, ranges.join(", "))
    }
}

/// See [`RangeSet::candidates`].
pub struct Candidates<'a> {
    set: &'a RangeSet,
    range: usize,
    next: u128,
    /// Positions (allocatable or not) still to visit.
    left: u128,
}

impl Iterator for Candidates<'_> {
    /// The range's index in the set and the address.
    type Item = (usize, IpAddr);

    fn next(&mut self) -> Option<(usize, IpAddr)> {
        while self.left > 0 {
            self.left -= 1;
            let r = &self.set.ranges[self.range];
            let ip = from_u128(self.next, r.is_v4());
            let index = self.range;
            if self.next == to_u128(r.end) {
                self.range = (self.range + 1) % self.set.ranges.len();
                self.next = to_u128(self.set.ranges[self.range].start);
            } else {
                self.next += 1;
            }
            if !r.is_reserved(ip) {
                return Some((index, ip));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn range(subnet: &str, start: &str, end: &str, gw: &str) -> Range {
        Range {
            subnet: subnet.parse().unwrap(),
            start: ip(start),
            end: ip(end),
            gateway: ip(gw),
        }
    }

    fn set(ranges: Vec<Range>) -> RangeSet {
        RangeSet {
            ranges,
            source: "ipam.ranges[0]".into(),
        }
    }

    fn all(s: &RangeSet, last: Option<&str>) -> Vec<String> {
        s.candidates(last.map(ip))
            .map(|(_, a)| a.to_string())
            .collect()
    }

    #[test]
    fn contains_respects_bounds_and_family() {
        let r = range("10.0.0.0/29", "10.0.0.2", "10.0.0.5", "10.0.0.1");
        assert!(!r.contains(ip("10.0.0.1")));
        assert!(r.contains(ip("10.0.0.2")) && r.contains(ip("10.0.0.5")));
        assert!(!r.contains(ip("10.0.0.6")));
        assert!(!r.contains(ip("::ffff:10.0.0.3")));
        assert!(!r.contains(ip("fd00::3")));
    }

    #[test]
    fn iteration_skips_gateway_network_and_broadcast() {
        // An explicit range covering the whole /29, gateway in the middle.
        let s = set(vec![range(
            "10.0.0.0/29",
            "10.0.0.0",
            "10.0.0.7",
            "10.0.0.3",
        )]);
        assert_eq!(
            all(&s, None),
            ["10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
        assert_eq!(s.capacity(), 5);
        // IPv6 has no broadcast: the last address is usable.
        let s6 = set(vec![range("fd00::/126", "fd00::", "fd00::3", "fd00::1")]);
        assert_eq!(all(&s6, None), ["fd00::2", "fd00::3"]);
        assert_eq!(s6.capacity(), 2);
    }

    #[test]
    fn round_robin_after_last_reserved_wraps_across_ranges() {
        let s = set(vec![
            range("10.0.0.0/24", "10.0.0.10", "10.0.0.12", "10.0.0.1"),
            range("10.0.1.0/24", "10.0.1.20", "10.0.1.21", "10.0.1.1"),
        ]);
        let from_start = [
            "10.0.0.10",
            "10.0.0.11",
            "10.0.0.12",
            "10.0.1.20",
            "10.0.1.21",
        ];
        assert_eq!(all(&s, None), from_start);
        // After 10.0.0.11: the rest, then wrap; the last reserved address comes last.
        assert_eq!(
            all(&s, Some("10.0.0.11")),
            [
                "10.0.0.12",
                "10.0.1.20",
                "10.0.1.21",
                "10.0.0.10",
                "10.0.0.11"
            ]
        );
        // After a range's end: the next range's start.
        assert_eq!(
            all(&s, Some("10.0.0.12")),
            [
                "10.0.1.20",
                "10.0.1.21",
                "10.0.0.10",
                "10.0.0.11",
                "10.0.0.12"
            ]
        );
        assert_eq!(
            all(&s, Some("10.0.1.21")),
            from_start,
            "end of the last range wraps to the first"
        );
        // Outside the set (e.g. ranges changed since): from the start, as upstream.
        assert_eq!(all(&s, Some("10.9.9.9")), from_start);
        let c: Vec<usize> = s.candidates(None).map(|(i, _)| i).collect();
        assert_eq!(c, [0, 0, 0, 1, 1]);
    }

    #[test]
    fn overlap_is_about_ranges_not_subnets() {
        let a = range("10.0.0.0/24", "10.0.0.2", "10.0.0.100", "10.0.0.1");
        let b = range("10.0.0.0/24", "10.0.0.101", "10.0.0.200", "10.0.0.1");
        let c = range("10.0.0.0/16", "10.0.0.50", "10.0.0.60", "10.0.0.1");
        assert!(!a.overlaps(&b));
        assert!(a.overlaps(&c) && c.overlaps(&a));
        let v6 = range("fd00::/64", "fd00::2", "fd00::ff", "fd00::1");
        assert!(!a.overlaps(&v6));
    }

    #[test]
    fn huge_ipv6_range_iterates_lazily() {
        let r = range(
            "fd00::/64",
            "fd00::1",
            "fd00::ffff:ffff:ffff:ffff",
            "fd00::1",
        );
        let s = set(vec![r]);
        let first: Vec<_> = s
            .candidates(Some(ip("fd00::5")))
            .take(2)
            .map(|(_, a)| a.to_string())
            .collect();
        assert_eq!(first, ["fd00::6", "fd00::7"]);
        assert_eq!(s.capacity(), (1u128 << 64) - 2);
    }
}
