//! twemproxy-compatible ketama consistent hashing.
//!
//! The continuum is built exactly as nutcracker's `nc_ketama.c` builds it, so that a key lands on the same
//! server as through nutcracker given the same server list, weights, names and `hash:` function:
//!
//! - each live server gets `floor(weight / total_weight * 160 / 4 * live_servers + 1e-10) * 4` points,
//!   computed in the same `f32` steps as nutcracker (160 points for every server when weights are equal);
//! - the points of server `s` come from MD5 digests of the point names `"<name>-0"`, `"<name>-1"`, ...:
//!   each 16-byte digest gives four points, the little-endian `u32`s at offsets 0, 4, 8 and 12;
//! - `<name>` is the server's name when it is configured as `host:port:weight name`, otherwise
//!   `host:port`, or just `host` when the port is 11211 (libmemcached compatibility);
//! - the points are sorted by value, and a key hash `h` is served by the first point whose value is
//!   `>= h`, wrapping to the first point past the end.
//!
//! The key hash itself (`hash:` function, `hash_tag`) is applied by [`crate::redis::distribution`].
//! Ejected servers (nutcracker's `auto_eject_hosts`) are modelled by [`Ketama::with_live`]: they get no
//! points and the shares of the others grow, as in nutcracker.

use md5::{Digest, Md5};

use super::error::RedisRouteError;

/// nutcracker's points per server (`KETAMA_POINTS_PER_SERVER`).
pub const POINTS_PER_SERVER: u32 = 160;
/// Points taken from one MD5 digest.
const POINTS_PER_HASH: u32 = 4;
/// nutcracker formats point names into an 86-byte buffer (`KETAMA_MAX_HOSTLEN`), NUL included.
const MAX_POINT_NAME: usize = 85;
/// The port libmemcached leaves out of a server's name.
pub const MEMCACHED_DEFAULT_PORT: u16 = 11211;

/// One server as ketama sees it: the name its points derive from and its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KetamaServer {
    /// The string hashed into point names (see the module docs).
    pub name: String,
    /// Relative weight, at least 1.
    pub weight: u32,
}

impl KetamaServer {
    /// A server with an explicit ketama name (`host:port:weight name` in nutcracker).
    pub fn named(name: impl Into<String>, weight: u32) -> Self {
        KetamaServer {
            name: name.into(),
            weight,
        }
    }

    /// A server named as nutcracker names it: `name` if given, else `host:port` (`host` for port 11211).
    pub fn from_addr(host: &str, port: u16, weight: u32, name: Option<&str>) -> Self {
        let name = match name {
            Some(n) => n.to_owned(),
            None if port == MEMCACHED_DEFAULT_PORT => host.to_owned(),
            None => format!("{host}:{port}"),
        };
        KetamaServer { name, weight }
    }
}

/// A built continuum: sorted point values and, in parallel, the server index of each point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ketama {
    values: Box<[u32]>,
    owners: Box<[u32]>,
    servers: usize,
}

/// The four ketama points of one digest of `name`: little-endian words at offsets 0, 4, 8, 12.
fn digest_points(point_name: &[u8]) -> [u32; 4] {
    let d = Md5::digest(point_name);
    let w = |i: usize| u32::from_le_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

/// nutcracker's point count for one server, in its `f32` arithmetic.
fn points_for(weight: u32, total_weight: u32, live: u32) -> u32 {
    let pct = weight as f32 / total_weight as f32;
    let scaled = pct * POINTS_PER_SERVER as f32 / 4.0 * live as f32;
    // The C expression adds a double literal, so the sum is a double that is then narrowed to float.
    let nudged = (f64::from(scaled) + 0.000_000_000_1) as f32;
    (nudged.floor() * 4.0) as u32
}

impl Ketama {
    /// Build the continuum with every server live.
    pub fn new(servers: &[KetamaServer]) -> Result<Ketama, RedisRouteError> {
        Ketama::with_live(servers, |_| true)
    }

    /// Build the continuum from the servers for which `live(index)` is true (the others are ejected);
    /// server indexes stay those of `servers`.
    pub fn with_live(
        servers: &[KetamaServer],
        live: impl Fn(usize) -> bool,
    ) -> Result<Ketama, RedisRouteError> {
        if servers.is_empty() {
            return Err(RedisRouteError::NoServers);
        }
        let mut nlive: u32 = 0;
        let mut total_weight: u32 = 0;
        for (i, s) in servers.iter().enumerate() {
            if s.weight == 0 {
                return Err(RedisRouteError::ZeroWeight { index: i });
            }
            if live(i) {
                nlive += 1;
                total_weight = total_weight.saturating_add(s.weight);
            }
        }
        if nlive == 0 {
            return Err(RedisRouteError::NoLiveServers);
        }
        let mut points: Vec<(u32, u32)> = Vec::with_capacity(servers.len() * 160);
        let mut name_buf: Vec<u8> = Vec::with_capacity(MAX_POINT_NAME + 16);
        for (i, s) in servers.iter().enumerate() {
            if !live(i) {
                continue;
            }
            let per_server = points_for(s.weight, total_weight, nlive);
            let hashes = per_server / POINTS_PER_HASH;
            let longest = s.name.len() + 1 + hashes.saturating_sub(1).to_string().len();
            if longest > MAX_POINT_NAME {
                return Err(RedisRouteError::NameTooLong {
                    index: i,
                    len: s.name.len(),
                    max: MAX_POINT_NAME - 1 - hashes.saturating_sub(1).to_string().len(),
                });
            }
            for n in 0..hashes {
                name_buf.clear();
                name_buf.extend_from_slice(s.name.as_bytes());
                name_buf.push(b'-');
                name_buf.extend_from_slice(n.to_string().as_bytes());
                for v in digest_points(&name_buf) {
                    points.push((v, i as u32));
                }
            }
        }
        if points.is_empty() {
            return Err(RedisRouteError::NoLiveServers);
        }
        points.sort_by_key(|&(v, _)| v);
        Ok(Ketama {
            values: points.iter().map(|&(v, _)| v).collect(),
            owners: points.iter().map(|&(_, o)| o).collect(),
            servers: servers.len(),
        })
    }

    /// The server index serving a key whose hash is `hash`.
    #[inline]
    pub fn server_for_hash(&self, hash: u32) -> usize {
        let i = self.values.partition_point(|&v| v < hash);
        let i = if i == self.values.len() { 0 } else { i };
        self.owners.get(i).map_or(0, |&o| o as usize)
    }

    /// Number of points on the continuum.
    pub fn points(&self) -> usize {
        self.values.len()
    }

    /// Number of servers in the list the continuum was built from (live or not).
    pub fn servers(&self) -> usize {
        self.servers
    }

    /// Points per server index, for inspection and tests.
    pub fn points_per_server(&self) -> Vec<usize> {
        let mut out = vec![0; self.servers];
        for &o in self.owners.iter() {
            out[o as usize] += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unnamed(n: usize, weights: &[u32]) -> Vec<KetamaServer> {
        (0..n)
            .map(|i| KetamaServer::from_addr("127.0.0.1", 7000 + i as u16, weights[i], None))
            .collect()
    }

    #[test]
    fn equal_weights_give_160_points_each() {
        let k = Ketama::new(&unnamed(3, &[1, 1, 1])).unwrap();
        assert_eq!(k.points_per_server(), vec![160, 160, 160]);
        let k = Ketama::new(&unnamed(3, &[5, 5, 5])).unwrap();
        assert_eq!(k.points_per_server(), vec![160, 160, 160]);
    }

    #[test]
    fn weights_scale_points_as_nutcracker_does() {
        // pct * 40 * n floored then * 4: weights 1,2,3 of 6 over 3 servers -> 20, 40, 60 hashes.
        let k = Ketama::new(&unnamed(3, &[1, 2, 3])).unwrap();
        assert_eq!(k.points_per_server(), vec![80, 160, 240]);
        // 1/3 * 40 * 2 = 26.67 -> 26 hashes -> 104 points; 2/3 * 80 = 53.3 -> 53 -> 212.
        let k = Ketama::new(&unnamed(2, &[1, 2])).unwrap();
        assert_eq!(k.points_per_server(), vec![104, 212]);
    }

    #[test]
    fn names_follow_nutcracker() {
        assert_eq!(
            KetamaServer::from_addr("10.0.0.1", 6379, 1, None).name,
            "10.0.0.1:6379"
        );
        assert_eq!(
            KetamaServer::from_addr("10.0.0.1", 11211, 1, None).name,
            "10.0.0.1"
        );
        assert_eq!(
            KetamaServer::from_addr("10.0.0.1", 6379, 1, Some("shard-a")).name,
            "shard-a"
        );
    }

    #[test]
    fn lookup_takes_the_first_point_at_or_after_the_hash_and_wraps() {
        let k = Ketama::new(&unnamed(2, &[1, 1])).unwrap();
        let first = k.values[0];
        assert_eq!(k.server_for_hash(first), k.owners[0] as usize);
        assert_eq!(
            k.server_for_hash(first.wrapping_add(1)),
            k.owners[1] as usize
        );
        let last = *k.values.last().unwrap();
        if last < u32::MAX {
            assert_eq!(k.server_for_hash(last + 1), k.owners[0] as usize);
        }
    }

    #[test]
    fn points_come_from_md5_of_name_dash_index() {
        let k = Ketama::new(&[KetamaServer::named("a", 1), KetamaServer::named("b", 1)]).unwrap();
        for (j, v) in digest_points(b"b-7").into_iter().enumerate() {
            let pos = k.values.iter().position(|&x| x == v);
            assert!(pos.is_some(), "point {j} of b-7 missing");
            assert_eq!(k.owners[pos.unwrap()], 1);
        }
    }

    #[test]
    fn ejected_servers_get_no_points() {
        let servers = unnamed(3, &[1, 1, 1]);
        let k = Ketama::with_live(&servers, |i| i != 1).unwrap();
        assert_eq!(k.points_per_server(), vec![160, 0, 160]);
        assert_eq!(
            Ketama::with_live(&servers, |_| false),
            Err(RedisRouteError::NoLiveServers)
        );
    }

    #[test]
    fn bad_configs_are_rejected() {
        assert_eq!(Ketama::new(&[]), Err(RedisRouteError::NoServers));
        assert_eq!(
            Ketama::new(&[KetamaServer::named("a", 0)]),
            Err(RedisRouteError::ZeroWeight { index: 0 })
        );
        let long = "x".repeat(90);
        assert!(matches!(
            Ketama::new(&[KetamaServer::named(long, 1)]),
            Err(RedisRouteError::NameTooLong { index: 0, .. })
        ));
    }
}
