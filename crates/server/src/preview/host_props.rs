//! Property tests of the preview address parsers: any input is parsed or refused, never a
//! panic; every well-formed address parses back to its parts. Fixed seed and case count.

use super::host::{check_port, parse_host, parse_path, HostError, Target};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(1024);
    Config { cases, rng_seed: RngSeed::Fixed(0x6d61_7966), failure_persistence: None, ..Config::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_host_or_path_is_parsed_or_refused(s in "\\PC{0,80}", port in any::<u16>()) {
        let _ = parse_host(&s, "localhost", port);
        let _ = parse_host(&format!("{s}.localhost:7070"), "localhost", port);
        let _ = parse_path(&s, port);
        let _ = parse_path(&format!("/preview/{s}"), port);
        let _ = check_port(&s, port);
    }

    #[test]
    fn well_formed_addresses_round_trip(
        p in 1024u16..=65535,
        session in "[a-z0-9][a-z0-9-]{0,40}[a-z0-9]",
        upper in any::<bool>(),
        rest in "(/[a-zA-Z0-9._~-]{0,10}){0,3}",
    ) {
        prop_assume!(p != 7070);
        let want = Target { session: session.clone(), port: p };
        let host = format!("{p}-{session}.localhost:7070");
        let host = if upper { host.to_ascii_uppercase() } else { host };
        prop_assert_eq!(parse_host(&host, "localhost", 7070), Ok(Some(want.clone())));
        let path = format!("/preview/{session}/{p}{rest}");
        prop_assert_eq!(parse_path(&path, 7070), Some(Ok((want, rest.as_str()))));
        prop_assert_eq!(parse_host(&format!("7070-{session}.localhost"), "localhost", 7070), Err(HostError::ControlPlane(7070)));
    }

    #[test]
    fn privileged_and_out_of_range_ports_are_refused(p in 0u32..1024, big in 65536u32..100000) {
        prop_assert!(check_port(&p.to_string(), 7070).is_err());
        prop_assert!(check_port(&big.to_string(), 7070).is_err());
    }
}
