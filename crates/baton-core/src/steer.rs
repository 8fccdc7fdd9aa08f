//! Steering the new connections of a `SO_REUSEPORT` group to the slots with a ready worker.
//!
//! With `balance: 'reuseport'` every slot of a group has its own listening socket, all
//! bound to one address; together they form one *reuseport group* in the kernel, which
//! picks the socket of each new connection when its SYN arrives. By default it picks by a
//! hash of the connection's addresses, so a slot without a ready worker (crashed, waiting
//! out its backoff, stopped by a stop-first reload) would keep its share of new
//! connections, which would wait in its queue until the client gives up.
//!
//! A classic BPF program attached with `SO_ATTACH_REUSEPORT_CBPF` (Linux >= 4.5, no
//! privilege needed; the program belongs to the group, so it is attached on any one of
//! its sockets) returns, for each SYN, the *index* of the socket that gets it. The index
//! is the socket's position in the kernel's group, which is the order in which the
//! sockets called `listen()` (the master binds and listens slot by slot, so index = slot
//! id) as long as none of them is closed: closing one moves the last socket into its
//! place. The master keeps every socket for its whole life, so the order holds (tested
//! below). An index outside the group makes the kernel fall back to its hash.
//!
//! The program ([`weighted`]: each serving slot with its share) is pure data:
//! `A = random % total; return the slot whose bucket range holds A`.
//!
//! **Random, not `SKF_AD_RXHASH`.** The program could read the packet's receive hash
//! (`skb->hash`) instead of a random number, which would keep a flow on one socket. But
//! TCP does not need that: only the SYN selects a listener (the handshake's last ACK finds
//! its request socket, already tied to that listener, in the established table), so
//! nothing depends on two packets of one connection choosing alike. And `skb->hash` is
//! whatever the NIC or the stack put there: a NIC that computes no RSS hash leaves it 0
//! for every packet (the BPF load reads the field, it does not compute a hash), and every
//! connection would land on `serving[0]`. `SKF_AD_RANDOM` (`get_random_u32()`) spreads
//! evenly on loopback and on any NIC.
//!
//! With no slot serving, the program is detached (`SO_DETACH_REUSEPORT_BPF`, Linux >= 5.3;
//! on older kernels a program returning an out-of-range index, which has the same effect):
//! the kernel hashes again, and connections queue until a worker is ready.
//!
//! All of this module's `unsafe` is the `setsockopt` in [`apply`].

use std::fmt;
use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::{AsRawFd, BorrowedFd};

/// One classic BPF instruction, laid out like the kernel's `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    /// Opcode (`BPF_LD | BPF_W | BPF_ABS`, ...).
    pub code: u16,
    /// Jump offset when the condition holds.
    pub jt: u8,
    /// Jump offset when it does not.
    pub jf: u8,
    /// Constant operand.
    pub k: u32,
}

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h); the same on every arch.
const BPF_LD: u16 = 0x00;
const BPF_ALU: u16 = 0x04;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_MOD: u16 = 0x90;
const BPF_JGE: u16 = 0x30;
const BPF_K: u16 = 0x00;
const BPF_X: u16 = 0x08;
const BPF_B: u16 = 0x10;
const BPF_ST: u16 = 0x02;
const BPF_MISC: u16 = 0x07;
const BPF_MEM: u16 = 0x60;
const BPF_MUL: u16 = 0x20;
const BPF_RSH: u16 = 0x70;
const BPF_XOR: u16 = 0xa0;
const BPF_JA: u16 = 0x00;
const BPF_JEQ: u16 = 0x10;
const BPF_TAX: u16 = 0x00;
const BPF_A: u16 = 0x10;
/// `SKF_NET_OFF`: loads relative to the packet's network (IP) header. The reuseport
/// program runs with the packet's data at the TCP payload, so absolute offsets cannot
/// reach the addresses; this negative base can.
const NET: u32 = (-0x100000i32) as u32;
/// `SKF_AD_OFF + SKF_AD_RANDOM`: the ancillary load of a random u32.
const LOAD_RANDOM: u32 = (-0x1000i32 + 56) as u32;
/// `BPF_MAXINSNS`: the kernel refuses longer classic programs.
const MAX_INSNS: usize = 4096;

/// The most serving slots one program can name (`2n + 1` instructions).
pub const MAX_SERVING: usize = (MAX_INSNS - 1) / 2;

/// What the kernel should do with a group's new connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Steering {
    /// No slot is serving: no program, the kernel's hash (connections wait in the queues).
    Hash,
    /// Run this program on every SYN.
    Program(Vec<Insn>),
}

fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// The steering for a group whose serving sockets are `serving` (socket indices, i.e.
/// slot ids, in any order; duplicates are ignored): each new connection goes to one of
/// them, chosen uniformly at random. Empty: [`Steering::Hash`].
///
/// Fails when more than [`MAX_SERVING`] slots are serving (the kernel's program size
/// limit); the caller then leaves the kernel's hash in place. The driver steers with
/// [`weighted`] only (rebalancing); this uniform form is kept for the kernel tests below.
#[cfg(test)]
pub fn program(serving: &[u32]) -> Result<Steering, String> {
    let mut slots = serving.to_vec();
    slots.sort_unstable();
    slots.dedup();
    let n = slots.len();
    if n > 1 && slots.iter().enumerate().all(|(i, s)| *s == i as u32) {
        // Slots 0..n: `A %= n` is already the index.
        return Ok(Steering::Program(vec![
            stmt(BPF_LD | BPF_W | BPF_ABS, LOAD_RANDOM),
            stmt(BPF_ALU | BPF_MOD | BPF_K, n as u32),
            stmt(BPF_RET | BPF_A, 0),
        ]));
    }
    let shares: Vec<(u32, u32)> = slots.into_iter().map(|s| (s, 1)).collect();
    weighted(&shares)
}

/// The steering that sends each new connection to socket `slot` with probability
/// `weight / total` for each `(slot, weight)` of `shares` (slots with weight 0 get none).
/// `A = random % total`, then `A < w0 ? s0 : A < w0 + w1 ? s1 : ...`. No weight at all:
/// [`Steering::Hash`].
pub fn weighted(shares: &[(u32, u32)]) -> Result<Steering, String> {
    let shares: Vec<(u32, u32)> = shares.iter().copied().filter(|(_, w)| *w > 0).collect();
    let n = shares.len();
    if n == 0 {
        return Ok(Steering::Hash);
    }
    if n > MAX_SERVING {
        return Err(format!(
            "{n} serving slots: a steering program can name at most {MAX_SERVING}"
        ));
    }
    if n == 1 {
        return Ok(Steering::Program(vec![stmt(BPF_RET | BPF_K, shares[0].0)]));
    }
    let total: u64 = shares.iter().map(|(_, w)| u64::from(*w)).sum();
    let total = u32::try_from(total)
        .map_err(|_| format!("steering weights sum to {total}, more than 2^32 - 1"))?;
    let mut insns = vec![
        stmt(BPF_LD | BPF_W | BPF_ABS, LOAD_RANDOM),
        stmt(BPF_ALU | BPF_MOD | BPF_K, total),
    ];
    // `if A >= upper skip; return slot` for all but the last, which takes the rest.
    let mut upper = 0u32;
    for (slot, weight) in &shares[..n - 1] {
        upper += weight;
        insns.push(Insn {
            code: BPF_JMP | BPF_JGE | BPF_K,
            jt: 1,
            jf: 0,
            k: upper,
        });
        insns.push(stmt(BPF_RET | BPF_K, *slot));
    }
    insns.push(stmt(BPF_RET | BPF_K, shares[n - 1].0));
    Ok(Steering::Program(insns))
}

/// The steering of `balance: 'sticky'`: each new connection goes to a slot chosen from
/// its **source address only** (not its port), so every connection of one client address
/// lands on the same slot while that slot serves.
///
/// `slots` is the number of sockets in the reuseport group (socket index = slot id) and
/// `serving` the slots with a ready worker. The program hashes the source address
/// ([`source_hash`]: IPv4, or the 4 words of an IPv6 source xored, then murmur3's
/// finalizer), takes `hash % slots` as the client's **home slot** and returns it when it
/// serves. A client whose home slot does not serve goes to a serving slot chosen by
/// other bits of the same hash (`(hash >> 16) % serving.len()`), so it is still steady
/// while the serving set stays the same, and returns home once the slot serves again.
/// Consequences: a slot that stops serving moves only its own clients; a change in the
/// number of slots (`baton scale`) moves most clients. No serving slot:
/// [`Steering::Hash`]. Fails when the program would exceed the kernel's size limit.
pub fn sticky(slots: u32, serving: &[u32]) -> Result<Steering, String> {
    let mut serving: Vec<u32> = serving.iter().copied().filter(|s| *s < slots).collect();
    serving.sort_unstable();
    serving.dedup();
    let n = serving.len();
    if n == 0 {
        return Ok(Steering::Hash);
    }
    let down: Vec<u32> = (0..slots)
        .filter(|s| serving.binary_search(s).is_err())
        .collect();
    let mut p = vec![
        // A = the IP version nibble.
        stmt(BPF_LD | BPF_B | BPF_ABS, NET),
        stmt(BPF_ALU | BPF_RSH | BPF_K, 4),
        // IPv6: skip the IPv4 load and its jump.
        Insn {
            code: BPF_JMP | BPF_JEQ | BPF_K,
            jt: 2,
            jf: 0,
            k: 6,
        },
        stmt(BPF_LD | BPF_W | BPF_ABS, NET + 12), // IPv4 source address
        stmt(BPF_JMP | BPF_JA, 10),               // over the IPv6 block
        // IPv6 source address (bytes 8..24): its 4 words xored.
        stmt(BPF_LD | BPF_W | BPF_ABS, NET + 8),
    ];
    for off in [12, 16, 20] {
        p.push(stmt(BPF_MISC | BPF_TAX, 0));
        p.push(stmt(BPF_LD | BPF_W | BPF_ABS, NET + off));
        p.push(stmt(BPF_ALU | BPF_XOR | BPF_X, 0));
    }
    // murmur3's fmix32: h ^= h >> 16; h *= c1; h ^= h >> 13; h *= c2; h ^= h >> 16.
    let xorshift = |p: &mut Vec<Insn>, by: u32| {
        p.push(stmt(BPF_MISC | BPF_TAX, 0));
        p.push(stmt(BPF_ALU | BPF_RSH | BPF_K, by));
        p.push(stmt(BPF_ALU | BPF_XOR | BPF_X, 0));
    };
    xorshift(&mut p, 16);
    p.push(stmt(BPF_ALU | BPF_MUL | BPF_K, FMIX_C1));
    xorshift(&mut p, 13);
    p.push(stmt(BPF_ALU | BPF_MUL | BPF_K, FMIX_C2));
    xorshift(&mut p, 16);
    p.push(stmt(BPF_ST, 0)); // M[0] = hash
    p.push(stmt(BPF_ALU | BPF_MOD | BPF_K, slots));
    // Home slot not serving: jump to the fallback (after the `ret A` below).
    let fallback_at = p.len() + 2 * down.len() + 1;
    for s in &down {
        p.push(Insn {
            code: BPF_JMP | BPF_JEQ | BPF_K,
            jt: 0,
            jf: 1,
            k: *s,
        });
        let here = p.len() + 1;
        p.push(stmt(BPF_JMP | BPF_JA, (fallback_at - here) as u32));
    }
    p.push(stmt(BPF_RET | BPF_A, 0));
    debug_assert_eq!(p.len(), fallback_at);
    p.push(stmt(BPF_LD | BPF_MEM, 0));
    p.push(stmt(BPF_ALU | BPF_RSH | BPF_K, 16));
    if n > 1 {
        p.push(stmt(BPF_ALU | BPF_MOD | BPF_K, n as u32));
    }
    for (i, slot) in serving[..n - 1].iter().enumerate() {
        p.push(Insn {
            code: BPF_JMP | BPF_JGE | BPF_K,
            jt: 1,
            jf: 0,
            k: i as u32 + 1,
        });
        p.push(stmt(BPF_RET | BPF_K, *slot));
    }
    p.push(stmt(BPF_RET | BPF_K, serving[n - 1]));
    if p.len() > MAX_INSNS {
        return Err(format!(
            "{slots} slots: a sticky steering program would need {} instructions, more than the \
             kernel's {MAX_INSNS}",
            p.len()
        ));
    }
    Ok(Steering::Program(p))
}

const FMIX_C1: u32 = 0x85eb_ca6b;
const FMIX_C2: u32 = 0xc2b2_ae35;

/// The hash the [`sticky`] program computes from a source address (IPv4-mapped IPv6
/// addresses hash as their IPv4 address, which is what the kernel sees on the wire).
pub fn source_hash(ip: std::net::IpAddr) -> u32 {
    let mut h = match ip {
        std::net::IpAddr::V4(v4) => u32::from(v4),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u32::from(v4),
            None => {
                let o = v6.octets();
                (0..4).fold(0u32, |acc, i| {
                    acc ^ u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
                })
            }
        },
    };
    h ^= h >> 16;
    h = h.wrapping_mul(FMIX_C1);
    h ^= h >> 13;
    h = h.wrapping_mul(FMIX_C2);
    h ^= h >> 16;
    h
}

/// The slot [`sticky`]'s program picks for a client at `ip` (the same rule, for tests and
/// documentation); `None` when no slot serves.
pub fn sticky_slot(ip: std::net::IpAddr, slots: u32, serving: &[u32]) -> Option<u32> {
    let mut serving: Vec<u32> = serving.iter().copied().filter(|s| *s < slots).collect();
    serving.sort_unstable();
    serving.dedup();
    if serving.is_empty() {
        return None;
    }
    let h = source_hash(ip);
    let home = h % slots;
    if serving.binary_search(&home).is_ok() {
        return Some(home);
    }
    Some(serving[((h >> 16) % serving.len() as u32) as usize])
}

// SO_ATTACH_REUSEPORT_CBPF / SO_DETACH_REUSEPORT_BPF (asm-generic/socket.h; sparc has its
// own numbers). libc does not export them for Linux targets.
#[cfg(all(target_os = "linux", not(target_arch = "sparc64")))]
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
#[cfg(all(target_os = "linux", not(target_arch = "sparc64")))]
const SO_DETACH_REUSEPORT_BPF: libc::c_int = 68;
#[cfg(all(target_os = "linux", target_arch = "sparc64"))]
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 0x35;
#[cfg(all(target_os = "linux", target_arch = "sparc64"))]
const SO_DETACH_REUSEPORT_BPF: libc::c_int = 0x47;

/// A steering change the kernel refused: the socket option and the OS error.
#[derive(Debug)]
pub struct SteerError {
    /// `SO_ATTACH_REUSEPORT_CBPF` or `SO_DETACH_REUSEPORT_BPF`.
    pub option: &'static str,
    /// The OS error.
    pub source: io::Error,
}

impl fmt::Display for SteerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "setsockopt({}) failed: {}", self.option, self.source)
    }
}

impl std::error::Error for SteerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Install `steering` on the reuseport group of `socket` (a listening `SO_REUSEPORT`
/// socket of that group).
#[cfg(target_os = "linux")]
pub fn apply(socket: BorrowedFd<'_>, steering: &Steering) -> Result<(), SteerError> {
    match steering {
        Steering::Program(insns) => attach(socket, insns),
        Steering::Hash => match detach(socket) {
            Ok(()) => Ok(()),
            // Nothing attached: the kernel already hashes.
            Err(e) if e.source.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            // Linux < 5.3 cannot detach: an out-of-range index falls back to the hash too.
            Err(e) if e.source.raw_os_error() == Some(libc::ENOPROTOOPT) => {
                attach(socket, &[stmt(BPF_RET | BPF_K, u32::MAX)])
            }
            Err(e) => Err(e),
        },
    }
}

#[cfg(target_os = "linux")]
fn attach(socket: BorrowedFd<'_>, insns: &[Insn]) -> Result<(), SteerError> {
    let fail = |source| SteerError {
        option: "SO_ATTACH_REUSEPORT_CBPF",
        source,
    };
    let len = u16::try_from(insns.len()).map_err(|_| {
        fail(io::Error::new(
            io::ErrorKind::InvalidInput,
            "program too long",
        ))
    })?;
    let prog = libc::sock_fprog {
        len,
        // `Insn` is `repr(C)` with the fields of `struct sock_filter`, in its order.
        filter: insns.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `insns.len()` valid instructions that outlive the call (the
    // kernel copies them before returning); the option length is the size of `prog`.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(fail(io::Error::last_os_error()))
    }
}

#[cfg(target_os = "linux")]
fn detach(socket: BorrowedFd<'_>) -> Result<(), SteerError> {
    let zero: libc::c_int = 0;
    // SAFETY: the option takes an int (ignored by the kernel) that lives across the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_DETACH_REUSEPORT_BPF,
            (&zero as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(SteerError {
            option: "SO_DETACH_REUSEPORT_BPF",
            source: io::Error::last_os_error(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the subset of classic BPF that [`program`] emits, with `random` as the random
    /// load, and returns the program's result.
    fn run(insns: &[Insn], random: u32) -> u32 {
        run_on(insns, random, &[])
    }

    /// Runs the subset of classic BPF that [`program`], [`weighted`] and [`sticky`] emit,
    /// with `random` as the random load and `net` as the bytes from the network header on.
    fn run_on(insns: &[Insn], random: u32, net: &[u8]) -> u32 {
        let mut a: u32 = 0;
        let mut x: u32 = 0;
        let mut mem = [0u32; 16];
        let mut pc = 0;
        let at = |k: u32| (k - NET) as usize;
        loop {
            let i = insns[pc];
            match i.code {
                c if c == BPF_LD | BPF_W | BPF_ABS && i.k == LOAD_RANDOM => a = random,
                c if c == BPF_LD | BPF_W | BPF_ABS => {
                    let o = at(i.k);
                    a = u32::from_be_bytes(net[o..o + 4].try_into().unwrap());
                }
                c if c == BPF_LD | BPF_B | BPF_ABS => a = u32::from(net[at(i.k)]),
                c if c == BPF_LD | BPF_MEM => a = mem[i.k as usize],
                c if c == BPF_ST => mem[i.k as usize] = a,
                c if c == BPF_MISC | BPF_TAX => x = a,
                c if c == BPF_ALU | BPF_MOD | BPF_K => {
                    assert_ne!(i.k, 0);
                    a %= i.k;
                }
                c if c == BPF_ALU | BPF_RSH | BPF_K => a >>= i.k,
                c if c == BPF_ALU | BPF_MUL | BPF_K => a = a.wrapping_mul(i.k),
                c if c == BPF_ALU | BPF_XOR | BPF_X => a ^= x,
                c if c == BPF_JMP | BPF_JA => pc += i.k as usize,
                c if c == BPF_JMP | BPF_JGE | BPF_K => {
                    pc += if a >= i.k { i.jt } else { i.jf } as usize;
                }
                c if c == BPF_JMP | BPF_JEQ | BPF_K => {
                    pc += if a == i.k { i.jt } else { i.jf } as usize;
                }
                c if c == BPF_RET | BPF_K => return i.k,
                c if c == BPF_RET | BPF_A => return a,
                c => panic!("unexpected opcode {c:#x}"),
            }
            pc += 1;
        }
    }

    /// The network header of a TCP packet from `src` (only what the program reads).
    fn header(src: std::net::IpAddr) -> Vec<u8> {
        match src {
            std::net::IpAddr::V4(v4) => {
                let mut h = vec![0x45u8; 20];
                h[12..16].copy_from_slice(&v4.octets());
                h
            }
            std::net::IpAddr::V6(v6) => {
                let mut h = vec![0x60u8; 40];
                h[8..24].copy_from_slice(&v6.octets());
                h
            }
        }
    }

    fn sticky_insns(slots: u32, serving: &[u32]) -> Vec<Insn> {
        match sticky(slots, serving).unwrap() {
            Steering::Program(p) => p,
            Steering::Hash => panic!("expected a program for {serving:?}"),
        }
    }

    fn loopback(i: u32) -> std::net::IpAddr {
        std::net::Ipv4Addr::from(0x7f00_0000 + i).into()
    }

    #[test]
    fn sticky_program_picks_the_slot_of_sticky_slot() {
        let v6: Vec<std::net::IpAddr> = (0..200u128)
            .map(|i| std::net::Ipv6Addr::from((0x2001_0db8_u128 << 96) | (i * 7919)).into())
            .collect();
        let addrs: Vec<std::net::IpAddr> = (1..300).map(loopback).chain(v6).collect();
        for (slots, serving) in [
            (1, vec![0]),
            (2, vec![0, 1]),
            (2, vec![1]),
            (4, vec![0, 1, 2, 3]),
            (4, vec![0, 3]),
            (8, vec![5]),
            (7, vec![6, 2, 4]),
        ] {
            let p = sticky_insns(slots, &serving);
            for ip in &addrs {
                // The random value plays no part: only the source address does.
                let got: Vec<u32> = [0, 17, u32::MAX]
                    .iter()
                    .map(|r| run_on(&p, *r, &header(*ip)))
                    .collect();
                let want = sticky_slot(*ip, slots, &serving).unwrap();
                assert_eq!(got, [want; 3], "{ip}, {slots} slots, serving {serving:?}");
                assert!(serving.contains(&want));
            }
        }
        assert_eq!(sticky(4, &[]).unwrap(), Steering::Hash);
        assert_eq!(sticky(2, &[5]).unwrap(), Steering::Hash);
        assert!(sticky(5000, &[0]).is_err());
    }

    #[test]
    fn sticky_spreads_addresses_and_keeps_clients_of_serving_slots_home() {
        let addrs: Vec<std::net::IpAddr> = (1..=4000).map(loopback).collect();
        for slots in [2u32, 3, 4, 8] {
            let all: Vec<u32> = (0..slots).collect();
            let mut counts = vec![0usize; slots as usize];
            for ip in &addrs {
                counts[sticky_slot(*ip, slots, &all).unwrap() as usize] += 1;
            }
            let fair = addrs.len() / slots as usize;
            assert!(
                counts
                    .iter()
                    .all(|c| *c > fair * 8 / 10 && *c < fair * 12 / 10),
                "{slots} slots: {counts:?}"
            );
            // One slot down (a stop-first reload): only its clients move, spread over the
            // others, and they come back when it serves again.
            let down = slots - 1;
            let rest: Vec<u32> = all.iter().copied().filter(|s| *s != down).collect();
            let mut moved_to = vec![0usize; slots as usize];
            for ip in &addrs {
                let home = sticky_slot(*ip, slots, &all).unwrap();
                let now = sticky_slot(*ip, slots, &rest).unwrap();
                if home == down {
                    moved_to[now as usize] += 1;
                } else {
                    assert_eq!(now, home, "{ip} moved although its slot serves");
                }
            }
            assert_eq!(moved_to[down as usize], 0);
            if slots > 2 {
                assert!(
                    rest.iter().all(|s| moved_to[*s as usize] > 0),
                    "{moved_to:?}"
                );
            }
        }
    }

    #[test]
    fn sticky_ipv4_mapped_hashes_as_ipv4() {
        let v4: std::net::Ipv4Addr = "127.0.0.9".parse().unwrap();
        assert_eq!(
            source_hash(v4.to_ipv6_mapped().into()),
            source_hash(v4.into())
        );
    }

    fn insns(serving: &[u32]) -> Vec<Insn> {
        match program(serving).unwrap() {
            Steering::Program(p) => p,
            Steering::Hash => panic!("expected a program for {serving:?}"),
        }
    }

    #[test]
    fn no_serving_slot_is_the_kernel_hash() {
        assert_eq!(program(&[]).unwrap(), Steering::Hash);
    }

    #[test]
    fn one_serving_slot_returns_it() {
        let p = insns(&[4]);
        assert_eq!(p.len(), 1);
        for r in [0, 1, 7, u32::MAX] {
            assert_eq!(run(&p, r), 4);
        }
    }

    #[test]
    fn every_random_value_maps_to_a_serving_slot_evenly() {
        for serving in [
            vec![0, 2],
            vec![1, 2, 3],
            vec![0, 1, 2],
            vec![5, 0, 9, 3],
            (0..64).filter(|s| s % 3 != 0).collect(),
        ] {
            let p = insns(&serving);
            let mut sorted = serving.clone();
            sorted.sort_unstable();
            // Consecutive random values visit every serving slot once per n values.
            let n = sorted.len() as u32;
            for base in [0u32, 1000, u32::MAX - 2 * n] {
                let mut hits: Vec<u32> = (base..base + n).map(|r| run(&p, r)).collect();
                hits.sort_unstable();
                assert_eq!(hits, sorted, "serving {serving:?}, random from {base}");
            }
            assert!(p.len() <= 2 * sorted.len() + 1);
        }
    }

    #[test]
    fn all_slots_serving_needs_no_jump_table() {
        let p = insns(&[2, 0, 1]);
        assert_eq!(p.len(), 3);
        assert_eq!(p[2], stmt(BPF_RET | BPF_A, 0));
        assert_eq!(
            (0..6).map(|r| run(&p, r)).collect::<Vec<_>>(),
            [0, 1, 2, 0, 1, 2]
        );
    }

    #[test]
    fn duplicates_are_ignored_and_size_is_bounded() {
        assert_eq!(insns(&[3, 3, 1]), insns(&[1, 3]));
        let big: Vec<u32> = (1..=MAX_SERVING as u32).collect();
        assert!(insns(&big).len() <= MAX_INSNS);
        let too_big: Vec<u32> = (1..=MAX_SERVING as u32 + 1).collect();
        let err = program(&too_big).unwrap_err();
        assert!(err.contains("at most"), "{err}");
    }

    #[test]
    fn weighted_shares_are_contiguous_ranges_of_the_random_value() {
        let p = match weighted(&[(3, 2), (0, 0), (1, 5), (7, 1)]).unwrap() {
            Steering::Program(p) => p,
            Steering::Hash => panic!("expected a program"),
        };
        let got: Vec<u32> = (0..16).map(|r| run(&p, r)).collect();
        assert_eq!(got, [3, 3, 1, 1, 1, 1, 1, 7, 3, 3, 1, 1, 1, 1, 1, 7]);
        assert_eq!(weighted(&[(1, 0)]).unwrap(), Steering::Hash);
        assert!(weighted(&[(0, u32::MAX), (1, 1)]).is_err());
    }

    #[test]
    fn layout_matches_sock_filter() {
        #[cfg(target_os = "linux")]
        {
            assert_eq!(
                std::mem::size_of::<Insn>(),
                std::mem::size_of::<libc::sock_filter>()
            );
            assert_eq!(
                std::mem::align_of::<Insn>(),
                std::mem::align_of::<libc::sock_filter>()
            );
        }
        assert_eq!(std::mem::size_of::<Insn>(), 8);
    }

    /// The kernel's side, with real sockets on 127.0.0.1.
    #[cfg(target_os = "linux")]
    mod kernel {
        use super::super::*;
        use mio::unix::SourceFd;
        use mio::{Events, Interest, Poll, Token};
        use socket2::{Domain, SockAddr, Socket, Type};
        use std::net::{SocketAddr, TcpStream};
        use std::os::fd::{AsFd, AsRawFd};
        use std::time::{Duration, Instant};

        /// `count` reuseport sockets bound to one 127.0.0.1 port, not listening yet.
        fn bound(count: usize) -> (Vec<Socket>, SocketAddr) {
            let mut socks: Vec<Socket> = Vec::new();
            let mut addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
            for _ in 0..count {
                let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                s.set_reuse_port(true).unwrap();
                s.bind(&SockAddr::from(addr)).unwrap();
                addr = s.local_addr().unwrap().as_socket().unwrap();
                s.set_nonblocking(true).unwrap();
                socks.push(s);
            }
            (socks, addr)
        }

        fn listening(count: usize) -> (Vec<Socket>, SocketAddr) {
            let (socks, addr) = bound(count);
            for s in &socks {
                s.listen(512).unwrap();
            }
            (socks, addr)
        }

        /// Connect `clients` times and return how many connections each socket accepted.
        /// Waits (on readiness, bounded) until every connection has been accepted.
        fn spread(socks: &[Socket], addr: SocketAddr, clients: usize) -> Vec<usize> {
            let mut poll = Poll::new().unwrap();
            for (i, s) in socks.iter().enumerate() {
                poll.registry()
                    .register(&mut SourceFd(&s.as_raw_fd()), Token(i), Interest::READABLE)
                    .unwrap();
            }
            let mut streams = Vec::new();
            for _ in 0..clients {
                streams.push(TcpStream::connect(addr).unwrap());
            }
            let mut counts = vec![0; socks.len()];
            let mut accepted = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut events = Events::with_capacity(16);
            loop {
                for (i, s) in socks.iter().enumerate() {
                    while let Ok((conn, _)) = s.accept() {
                        counts[i] += 1;
                        accepted.push(conn);
                    }
                }
                if accepted.len() >= clients {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(!left.is_zero(), "only {counts:?} of {clients} accepted");
                poll.poll(&mut events, Some(left)).unwrap();
            }
            for (i, s) in socks.iter().enumerate() {
                assert!(s.accept().is_err(), "socket {i} has more than expected");
            }
            counts
        }

        fn steer(socks: &[Socket], serving: &[u32]) {
            apply(socks[0].as_fd(), &program(serving).unwrap()).unwrap();
        }

        #[test]
        fn a_socket_index_is_its_listen_order() {
            // Bound in order 0, 1, 2 but listening in order 2, 0, 1: the group follows listen().
            let (socks, addr) = bound(3);
            for i in [2, 0, 1] {
                socks[i].listen(64).unwrap();
            }
            for (index, expected) in [(0u32, 2usize), (1, 0), (2, 1)] {
                // The program is per group: attach it on a socket other than the target too.
                apply(socks[1].as_fd(), &program(&[index]).unwrap()).unwrap();
                let counts = spread(&socks, addr, 10);
                assert_eq!(counts[expected], 10, "index {index}: {counts:?}");
            }
        }

        #[test]
        fn one_serving_socket_gets_every_connection() {
            let (socks, addr) = listening(3);
            steer(&socks, &[1]);
            assert_eq!(spread(&socks, addr, 50), [0, 50, 0]);
        }

        #[test]
        fn two_serving_sockets_share_the_connections() {
            let (socks, addr) = listening(3);
            steer(&socks, &[0, 2]);
            let counts = spread(&socks, addr, 200);
            assert_eq!(counts[1], 0, "{counts:?}");
            // Uniform random: each gets 100 +- 35 with overwhelming probability (5 sigma).
            assert!(counts[0] > 65 && counts[2] > 65, "{counts:?}");
        }

        #[test]
        fn no_serving_socket_detaches_and_the_kernel_hashes_again() {
            let (socks, addr) = listening(3);
            steer(&socks, &[1]);
            assert_eq!(spread(&socks, addr, 20), [0, 20, 0]);
            steer(&socks, &[]);
            let counts = spread(&socks, addr, 200);
            assert!(counts.iter().all(|c| *c > 0), "hashed over all: {counts:?}");
            // Detaching again (nothing attached) is fine.
            steer(&socks, &[]);
        }

        #[test]
        fn an_out_of_range_index_falls_back_to_the_hash() {
            // What `apply` attaches for "no slot serving" on kernels that cannot detach.
            let (socks, addr) = listening(3);
            steer(&socks, &[2]);
            attach(socks[0].as_fd(), &[stmt(BPF_RET | BPF_K, u32::MAX)]).unwrap();
            let counts = spread(&socks, addr, 200);
            assert!(counts.iter().all(|c| *c > 0), "hashed over all: {counts:?}");
        }

        /// Each of `sources` (127.0.0.x) connects `per` times from fresh ports; returns
        /// the socket index that accepted each source's connections (all the same one).
        fn sticky_spread(
            socks: &[Socket],
            addr: SocketAddr,
            sources: &[u32],
            per: usize,
        ) -> Vec<usize> {
            let mut homes = Vec::new();
            for &x in sources {
                let mut seen = Vec::new();
                for _ in 0..per {
                    let c = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                    let local: SocketAddr = format!("127.0.0.{x}:0").parse().unwrap();
                    c.bind(&SockAddr::from(local)).unwrap();
                    c.connect(&SockAddr::from(addr)).unwrap();
                    let deadline = Instant::now() + Duration::from_secs(10);
                    let got = loop {
                        if let Some(i) = socks.iter().position(|s| s.accept().is_ok()) {
                            break i;
                        }
                        assert!(Instant::now() < deadline, "127.0.0.{x}: not accepted");
                        std::thread::sleep(Duration::from_millis(1));
                    };
                    seen.push(got);
                }
                seen.dedup();
                assert_eq!(seen.len(), 1, "127.0.0.{x} landed on {seen:?}");
                homes.push(seen[0]);
            }
            homes
        }

        #[test]
        fn sticky_sends_one_source_address_to_one_socket() {
            let (socks, addr) = listening(4);
            let sources: Vec<u32> = (2..42).collect();
            apply(socks[2].as_fd(), &sticky(4, &[0, 1, 2, 3]).unwrap()).unwrap();
            let homes = sticky_spread(&socks, addr, &sources, 4);
            for (x, home) in sources.iter().zip(&homes) {
                let ip = format!("127.0.0.{x}").parse().unwrap();
                assert_eq!(Some(*home as u32), sticky_slot(ip, 4, &[0, 1, 2, 3]));
            }
            let mut used = homes.clone();
            used.sort_unstable();
            used.dedup();
            assert_eq!(used, [0, 1, 2, 3], "40 addresses over 4 sockets: {homes:?}");
            // Slot 1 down: its clients go elsewhere, the others stay home.
            apply(socks[0].as_fd(), &sticky(4, &[0, 2, 3]).unwrap()).unwrap();
            let now = sticky_spread(&socks, addr, &sources, 2);
            for (home, now) in homes.iter().zip(&now) {
                assert_ne!(*now, 1);
                if *home != 1 {
                    assert_eq!(home, now);
                }
            }
        }

        #[test]
        fn sticky_reads_an_ipv6_source_address() {
            // Only ::1 is a local IPv6 source here: every connection from it lands on the
            // socket the Rust rule names, for several slot counts (so not by chance).
            let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
                return; // no IPv6 loopback in this environment
            };
            drop(probe);
            for slots in [3usize, 5, 7] {
                let mut socks: Vec<Socket> = Vec::new();
                let mut addr: SocketAddr = "[::1]:0".parse().unwrap();
                for _ in 0..slots {
                    let s = Socket::new(Domain::IPV6, Type::STREAM, None).unwrap();
                    s.set_reuse_port(true).unwrap();
                    s.bind(&SockAddr::from(addr)).unwrap();
                    addr = s.local_addr().unwrap().as_socket().unwrap();
                    s.set_nonblocking(true).unwrap();
                    s.listen(64).unwrap();
                    socks.push(s);
                }
                let all: Vec<u32> = (0..slots as u32).collect();
                apply(socks[0].as_fd(), &sticky(slots as u32, &all).unwrap()).unwrap();
                let want = sticky_slot("::1".parse().unwrap(), slots as u32, &all).unwrap();
                let counts = spread(&socks, addr, 10);
                assert_eq!(counts[want as usize], 10, "{slots} slots: {counts:?}");
            }
        }

        #[test]
        fn all_serving_spreads_over_all() {
            let (socks, addr) = listening(3);
            steer(&socks, &[0, 1, 2]);
            let counts = spread(&socks, addr, 300);
            assert!(counts.iter().all(|c| *c > 50), "{counts:?}");
        }
    }
}
