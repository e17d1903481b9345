//! Property tests for the Redis side: command lookup is case-insensitive, key extraction never
//! panics and only names arguments that exist, hash tags and distributions stay in range.

use proptest::prelude::*;
use router::redis::command_table::COMMANDS;
use router::redis::{
    Distribution, HashFunction, KetamaServer, KeyHasher, SLOT_COUNT, SlotTable, key_slot, keys_of,
    lookup,
};

#[path = "../../fuzz/fuzz_targets/router_invariants.rs"]
mod invariants;

fn check(args: &[Vec<u8>]) {
    let argv: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    if let Err(v) = invariants::redis_args(&argv) {
        panic!("{v}\nargv: {:?}", args);
    }
}

/// A command name from the table (or a subcommand), in random case.
fn command_name() -> impl Strategy<Value = Vec<u8>> {
    let names: Vec<&'static str> = COMMANDS.iter().map(|c| c.name).collect();
    (prop::sample::select(names), any::<u64>()).prop_map(|(n, bits)| recase(n.as_bytes(), bits))
}

fn recase(name: &[u8], bits: u64) -> Vec<u8> {
    name.iter()
        .enumerate()
        .map(|(i, &c)| {
            if bits >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Arguments that steer key extraction: option words, counts (sane and absurd), keys.
fn argument() -> impl Strategy<Value = Vec<u8>> {
    let words = [
        "STREAMS",
        "streams",
        "COUNT",
        "BLOCK",
        "GROUP",
        "NOACK",
        "STORE",
        "STOREDIST",
        "LIMIT",
        "GET",
        "BY",
        "KEYS",
        "AUTH",
        "AUTH2",
        "WEIGHTS",
        "LEFT",
        "GET",
        "",
        "0",
        "1",
        "2",
        "3",
        "10",
        "-1",
        "99999999999999999999",
        "18446744073709551615",
        "{tag}",
        "{",
        "}",
        "{}",
    ];
    prop_oneof![
        3 => prop::sample::select(words.to_vec()).prop_map(|w| w.as_bytes().to_vec()),
        2 => "[a-z{}]{0,6}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ]
}

fn request() -> impl Strategy<Value = Vec<Vec<u8>>> {
    (
        command_name(),
        prop::option::of(command_name()),
        prop::collection::vec(argument(), 0..12),
    )
        .prop_map(|(name, sub, rest)| {
            // A subcommand name (`config|get`) in second place is split like a client sends it.
            let mut args = Vec::new();
            match name.iter().position(|&b| b == b'|') {
                Some(bar) => {
                    args.push(name[..bar].to_vec());
                    args.push(name[bar + 1..].to_vec());
                }
                None => args.push(name),
            }
            if let Some(s) = sub {
                args.push(s);
            }
            args.extend(rest);
            args
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_argv_is_handled(args in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..10), 0..10)) {
        check(&args);
    }

    #[test]
    fn known_commands_with_hostile_arguments_are_handled(args in request()) {
        check(&args);
    }

    #[test]
    fn fuzz_bytes_split_into_argv_are_handled(data in prop::collection::vec(any::<u8>(), 0..64)) {
        prop_assert!(invariants::redis_keys(&data).is_ok());
    }

    #[test]
    fn lookup_ignores_case(i in 0usize..COMMANDS.len(), bits in any::<u64>()) {
        let info = &COMMANDS[i];
        let name = recase(info.name.as_bytes(), bits);
        let found = lookup(&name).map(|c| c.name);
        if info.name.contains('|') {
            prop_assert_eq!(found, None);
        } else {
            prop_assert_eq!(found, Some(info.name));
        }
    }

    #[test]
    fn every_key_position_is_an_argument(i in 0usize..COMMANDS.len(), extra in 0usize..9, bits in any::<u64>()) {
        // Any argc around the arity: the positions returned (if any) index real arguments.
        let info = &COMMANDS[i];
        let argc = usize::from(info.arity.unsigned_abs()) + extra;
        let mut args: Vec<Vec<u8>> = vec![recase(info.name.as_bytes(), bits)];
        args.extend((1..argc).map(|n| n.to_string().into_bytes()));
        let argv: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        if let Ok(keys) = keys_of(info, &argv) {
            prop_assert!(info.arity_ok(argc));
            for k in keys {
                prop_assert!(k >= 1 && k < argc, "{} argc {}: key {}", info.name, argc, k);
            }
        }
        check(&args);
    }

    #[test]
    fn a_hash_tag_decides_the_slot(
        prefix in "[^{]{0,8}",
        tag in "[^}]{1,8}",
        suffix in "\\PC{0,8}",
    ) {
        let key = format!("{prefix}{{{tag}}}{suffix}");
        prop_assert_eq!(key_slot(key.as_bytes()), key_slot(tag.as_bytes()));
        prop_assert!(usize::from(key_slot(key.as_bytes())) < SLOT_COUNT);
    }

    #[test]
    fn an_empty_tag_hashes_the_whole_key(prefix in "[^{]{0,8}", suffix in "\\PC{0,8}") {
        let key = format!("{prefix}{{}}{suffix}");
        prop_assert_eq!(key_slot(key.as_bytes()), router::redis::slots::crc16(key.as_bytes()) % 16384);
    }

    #[test]
    fn nutcracker_tags_hash_a_part_of_the_key(key in prop::collection::vec(any::<u8>(), 0..24), tag in "[^\\x00]{2}") {
        let Ok(hasher) = KeyHasher::with_tag(HashFunction::Fnv1a64, &tag) else {
            // Not two bytes (a multi-byte character): refused, not mangled.
            prop_assert!(tag.len() != 2);
            return Ok(());
        };
        let part = hasher.hashed_part(&key);
        let inside = key.windows(part.len().max(1)).any(|w| w == part) || part.is_empty();
        prop_assert!(inside, "{:?} is not part of {:?}", part, key);
        prop_assert_eq!(hasher.hash(&key), hasher.hash(part));
    }

    #[test]
    fn every_distribution_picks_an_existing_server(
        key in prop::collection::vec(any::<u8>(), 0..24),
        weights in prop::collection::vec(1u32..5, 1..6),
    ) {
        let servers: Vec<KetamaServer> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| KetamaServer::named(format!("s{i}"), w))
            .collect();
        let hasher = KeyHasher::new(HashFunction::Md5);
        for d in [
            Distribution::ketama(hasher, &servers),
            Distribution::modula(hasher, &servers),
            Distribution::random(servers.len()),
        ] {
            let d = d.unwrap_or_else(|e| panic!("{e}"));
            prop_assert!(d.server_for_key(&key) < servers.len(), "{}", d.kind());
        }
        let slots = SlotTable::even(servers.len()).unwrap_or_else(|e| panic!("{e}"));
        prop_assert!(slots.server_for_key(&key) < servers.len());
    }
}
