//! Just enough of the kernel's BTF (`/sys/kernel/btf/vmlinux`) for the
//! kernel drop program: byte offsets of struct members (found through the
//! anonymous structs and unions the kernel nests them in, such as
//! `sk_buff`'s `struct_group(headers, …)`) and the names of an enum's
//! values (`enum skb_drop_reason`).
//!
//! aya-obj parses BTF too, but keeps struct members and enum values
//! private; the format is small and stable (include/uapi/linux/btf.h), so
//! this reads it directly. Every read is bounds-checked: a truncated or
//! foreign file is an error, never a panic.

use std::collections::HashMap;

use thiserror::Error;

/// Where the running kernel's BTF lives.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Why the BTF could not answer.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("not BTF, or a BTF this reader does not know: {0}")]
    Format(String),
    #[error("the kernel's BTF has no {0}")]
    Missing(String),
}

/// One type record: kind, name offset, the size-or-type word, and where its
/// trailing data starts.
#[derive(Clone, Copy, Debug)]
struct Type {
    kind: u32,
    kind_flag: bool,
    vlen: usize,
    name: u32,
    size_or_type: u32,
    data: usize,
}

/// A parsed BTF blob.
pub struct Btf {
    bytes: Vec<u8>,
    types: Vec<Type>,
    strings: usize,
    strings_len: usize,
    /// Struct and enum names to their type ids (first one wins).
    by_name: HashMap<(u32, String), u32>,
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, BtfError> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| BtfError::Format(format!("truncated at byte {at}")))
}

impl Btf {
    /// The running kernel's BTF.
    ///
    /// # Errors
    /// The file is missing (a kernel without `CONFIG_DEBUG_INFO_BTF`) or
    /// cannot be parsed.
    pub fn vmlinux() -> Result<Btf, BtfError> {
        let bytes = std::fs::read(VMLINUX_BTF).map_err(|e| BtfError::Read {
            path: VMLINUX_BTF.into(),
            reason: e.to_string(),
        })?;
        Btf::parse(bytes)
    }

    /// Parses a little-endian BTF blob.
    ///
    /// # Errors
    /// Not BTF, big-endian, truncated, or a type kind this reader does not
    /// know how to skip.
    pub fn parse(bytes: Vec<u8>) -> Result<Btf, BtfError> {
        let magic = bytes
            .get(0..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or_else(|| BtfError::Format("empty".into()))?;
        if magic != MAGIC {
            return Err(BtfError::Format(format!("magic {magic:#x}")));
        }
        let hdr_len = u32_at(&bytes, 4)? as usize;
        let type_off = u32_at(&bytes, 8)? as usize;
        let type_len = u32_at(&bytes, 12)? as usize;
        let str_off = u32_at(&bytes, 16)? as usize;
        let str_len = u32_at(&bytes, 20)? as usize;
        let types_start = hdr_len.saturating_add(type_off);
        let types_end = types_start.saturating_add(type_len);
        let strings = hdr_len.saturating_add(str_off);
        if types_end > bytes.len() || strings.saturating_add(str_len) > bytes.len() {
            return Err(BtfError::Format("sections beyond the end".into()));
        }
        let mut types = vec![Type {
            kind: 0,
            kind_flag: false,
            vlen: 0,
            name: 0,
            size_or_type: 0,
            data: 0,
        }];
        let mut at = types_start;
        while at < types_end {
            let name = u32_at(&bytes, at)?;
            let info = u32_at(&bytes, at + 4)?;
            let size_or_type = u32_at(&bytes, at + 8)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let data = at + 12;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                2 | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | 12 | 16
                | KIND_TYPE_TAG => 0,
                other => return Err(BtfError::Format(format!("unknown type kind {other}"))),
            };
            types.push(Type {
                kind,
                kind_flag: info >> 31 != 0,
                vlen,
                name,
                size_or_type,
                data,
            });
            at = data + extra;
        }
        let mut btf = Btf {
            bytes,
            types,
            strings,
            strings_len: str_len,
            by_name: HashMap::new(),
        };
        let mut by_name = HashMap::new();
        for (id, t) in btf.types.iter().enumerate() {
            if matches!(t.kind, KIND_STRUCT | KIND_ENUM | KIND_ENUM64) && t.name != 0 {
                let kind = if t.kind == KIND_ENUM64 {
                    KIND_ENUM
                } else {
                    t.kind
                };
                by_name
                    .entry((kind, btf.string(t.name)?.to_string()))
                    .or_insert(id as u32);
            }
        }
        btf.by_name = by_name;
        Ok(btf)
    }

    fn string(&self, offset: u32) -> Result<&str, BtfError> {
        let offset = offset as usize;
        if offset >= self.strings_len {
            return Err(BtfError::Format(format!("string offset {offset}")));
        }
        let start = self.strings + offset;
        let end = self.strings + self.strings_len;
        let bytes = &self.bytes[start..end];
        let len = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..len])
            .map_err(|_| BtfError::Format(format!("string at {offset} is not UTF-8")))
    }

    fn get(&self, id: u32) -> Result<Type, BtfError> {
        self.types
            .get(id as usize)
            .copied()
            .ok_or_else(|| BtfError::Format(format!("type id {id}")))
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> Result<Type, BtfError> {
        for _ in 0..32 {
            let t = self.get(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type;
                }
                _ => return Ok(t),
            }
        }
        Err(BtfError::Format(format!("type chain too long at {id}")))
    }

    /// The byte offset of `member` in `struct name`, looking into anonymous
    /// struct and union members.
    ///
    /// # Errors
    /// No such struct or member, or the member is a bitfield.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self
            .by_name
            .get(&(KIND_STRUCT, name.to_string()))
            .ok_or_else(|| BtfError::Missing(format!("struct {name}")))?;
        self.find_member(self.get(id)?, member, 0)?
            .ok_or_else(|| BtfError::Missing(format!("{name}.{member}")))
    }

    fn find_member(&self, t: Type, member: &str, depth: u32) -> Result<Option<u32>, BtfError> {
        if depth > 8 {
            return Ok(None);
        }
        for i in 0..t.vlen {
            let at = t.data + 12 * i;
            let name = u32_at(&self.bytes, at)?;
            let member_type = u32_at(&self.bytes, at + 4)?;
            let offset = u32_at(&self.bytes, at + 8)?;
            let (bits, bitfield) = if t.kind_flag {
                (offset & 0x00ff_ffff, offset >> 24 != 0)
            } else {
                (offset, false)
            };
            if name == 0 {
                let inner = self.resolve(member_type)?;
                if matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                    && let Some(found) = self.find_member(inner, member, depth + 1)?
                {
                    return Ok(Some(bits / 8 + found));
                }
            } else if self.string(name)? == member {
                if bitfield || bits % 8 != 0 {
                    return Err(BtfError::Format(format!("{member} is a bitfield")));
                }
                return Ok(Some(bits / 8));
            }
        }
        Ok(None)
    }

    /// The values of `enum name` with their names.
    ///
    /// # Errors
    /// No such enum.
    pub fn enum_values(&self, name: &str) -> Result<Vec<(u64, String)>, BtfError> {
        let id = *self
            .by_name
            .get(&(KIND_ENUM, name.to_string()))
            .ok_or_else(|| BtfError::Missing(format!("enum {name}")))?;
        let t = self.get(id)?;
        let width = if t.kind == KIND_ENUM64 { 12 } else { 8 };
        let mut values = Vec::with_capacity(t.vlen);
        for i in 0..t.vlen {
            let at = t.data + width * i;
            let value_name = self.string(u32_at(&self.bytes, at)?)?.to_string();
            let low = u64::from(u32_at(&self.bytes, at + 4)?);
            let value = if t.kind == KIND_ENUM64 {
                low | u64::from(u32_at(&self.bytes, at + 8)?) << 32
            } else {
                low
            };
            values.push((value, value_name));
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob: `struct outer { int a; union { struct { short b; int c; }; }; }`
    /// and `enum e { E_ONE = 1, E_TWO = 2 }`.
    fn blob() -> Vec<u8> {
        let strings = b"\0outer\0a\0b\0c\0int\0short\0e\0E_ONE\0E_TWO\0";
        let s = |name: &str| -> u32 {
            let needle = format!("\0{name}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int
        push(&[s("int"), KIND_INT << 24, 4, 32]);
        // 2: short
        push(&[s("short"), KIND_INT << 24, 2, 16]);
        // 3: anonymous struct { short b @0; int c @32 bits }
        push(&[0, KIND_STRUCT << 24 | 2, 8, s("b"), 2, 0, s("c"), 1, 32]);
        // 4: anonymous union { struct 3 }
        push(&[0, KIND_UNION << 24 | 1, 8, 0, 3, 0]);
        // 5: typedef of 4, to check resolution
        push(&[s("int"), KIND_TYPEDEF << 24, 4]);
        // 6: struct outer { int a @0; typedef-union @64 bits }
        push(&[
            s("outer"),
            KIND_STRUCT << 24 | 2,
            16,
            s("a"),
            1,
            0,
            0,
            5,
            64,
        ]);
        // 7: enum e
        push(&[s("e"), KIND_ENUM << 24 | 2, 4, s("E_ONE"), 1, s("E_TWO"), 2]);
        let mut out = Vec::new();
        for w in [
            u32::from(MAGIC) | 1 << 16,
            24,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(strings);
        out
    }

    #[test]
    fn members_are_found_through_anonymous_unions_and_structs() {
        let btf = Btf::parse(blob()).unwrap();
        assert_eq!(btf.member_offset("outer", "a"), Ok(0));
        assert_eq!(btf.member_offset("outer", "b"), Ok(8));
        assert_eq!(btf.member_offset("outer", "c"), Ok(12));
        assert!(matches!(
            btf.member_offset("outer", "d"),
            Err(BtfError::Missing(_))
        ));
        assert!(matches!(
            btf.member_offset("inner", "a"),
            Err(BtfError::Missing(_))
        ));
        assert_eq!(
            btf.enum_values("e").unwrap(),
            vec![(1, "E_ONE".to_string()), (2, "E_TWO".to_string())]
        );
    }

    #[test]
    fn truncated_or_foreign_blobs_are_errors_not_panics() {
        let whole = blob();
        for len in 0..whole.len() {
            let _ = Btf::parse(whole[..len].to_vec());
        }
        assert!(Btf::parse(vec![0; 64]).is_err());
        let mut bad_string = whole.clone();
        // The struct's name offset points past the strings.
        let at = 24 + 16 + 16 + 36 + 24 + 12;
        bad_string[at..at + 4].copy_from_slice(&10_000u32.to_le_bytes());
        assert!(Btf::parse(bad_string).is_err());
    }

    #[test]
    fn the_running_kernels_sk_buff_offsets_and_drop_reasons_are_read() {
        // Needs /sys/kernel/btf/vmlinux (Linux built with BTF): fails
        // loudly without it, as the kernel drop program needs it too.
        let btf = Btf::vmlinux().expect("/sys/kernel/btf/vmlinux");
        let head = btf.member_offset("sk_buff", "head").unwrap();
        let network = btf.member_offset("sk_buff", "network_header").unwrap();
        assert!(head > 0 && network > 0 && head != network);
        btf.member_offset("net_device", "ifindex").unwrap();
        let reasons = btf.enum_values("skb_drop_reason").unwrap();
        assert!(
            reasons
                .iter()
                .any(|(_, name)| name == "SKB_DROP_REASON_NETFILTER_DROP"),
            "{reasons:?}"
        );
    }
}
